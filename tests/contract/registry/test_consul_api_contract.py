"""The Consul HTTP API subset that discovery uses, driven through py-consul.

The same tests run against the sandbox's registry (CONSUL_URL unset) and a real Consul
(CONSUL_URL set): whatever passes here, `patterns.discovery` may rely on.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import consul
import pytest
import requests

from tests.contract.registry.conftest import FlipServer, eventually


def register_ttl_service(client: consul.Consul, cleanup: list[str], name: str, service_id: str,
                         ttl: str = "30s", **fields) -> str:
    """Register `service_id` with one TTL check; return the check's ID."""
    client.agent.service.register(name, service_id=service_id, address="127.0.0.1", port=9000,
                                  check=consul.Check.ttl(ttl), **fields)
    cleanup.append(service_id)
    return f"service:{service_id}"


def passing_ids(client: consul.Consul, name: str) -> list[str]:
    _, entries = client.health.service(name, passing=True)
    return sorted(entry["Service"]["ID"] for entry in entries)


def own_check(client: consul.Consul, name: str, check_id: str) -> dict:
    _, [entry] = client.health.service(name)
    return next(check for check in entry["Checks"] if check["CheckID"] == check_id)


def test_register_list_and_deregister(client, cleanup, service_name):
    check_id = register_ttl_service(client, cleanup, service_name, f"{service_name}-1",
                                    tags=["v1", "blue"], meta={"version": "1.0"})

    service = client.agent.services()[f"{service_name}-1"]
    assert service["Service"] == service_name and service["Port"] == 9000
    assert service["Address"] == "127.0.0.1" and service["Tags"] == ["v1", "blue"]
    assert service["Meta"] == {"version": "1.0"}
    check = client.agent.checks()[check_id]
    assert check["ServiceID"] == f"{service_name}-1" and check["Status"] == "critical"

    assert client.agent.service.deregister(f"{service_name}-1") is True
    assert f"{service_name}-1" not in client.agent.services()
    assert check_id not in client.agent.checks()
    assert client.agent.service.deregister(f"{service_name}-1") is False  # 404 now


def test_ttl_check_states_drive_the_passing_filter(client, cleanup, service_name):
    check_id = register_ttl_service(client, cleanup, service_name, f"{service_name}-1")
    assert passing_ids(client, service_name) == []  # a new check starts critical

    assert client.agent.check.ttl_pass(check_id, notes="ready") is True
    assert passing_ids(client, service_name) == [f"{service_name}-1"]
    assert own_check(client, service_name, check_id)["Output"] == "ready"

    client.agent.check.ttl_warn(check_id, notes="slow disk")
    assert passing_ids(client, service_name) == []
    assert own_check(client, service_name, check_id)["Status"] == "warning"

    client.agent.check.ttl_fail(check_id, notes="db down")
    assert own_check(client, service_name, check_id)["Status"] == "critical"

    client.agent.check.ttl_pass(check_id)
    assert passing_ids(client, service_name) == [f"{service_name}-1"]


def test_a_ttl_check_not_refreshed_in_time_turns_critical(client, cleanup, service_name):
    check_id = register_ttl_service(client, cleanup, service_name, f"{service_name}-1", ttl="1s")
    client.agent.check.ttl_pass(check_id, notes="last words")
    assert passing_ids(client, service_name) == [f"{service_name}-1"]

    check = eventually(lambda: (c := own_check(client, service_name, check_id))
                       ["Status"] == "critical" and c, timeout=10)
    assert check["Output"].startswith("TTL expired")
    assert passing_ids(client, service_name) == []


def test_an_http_check_is_polled_and_follows_its_target(client, cleanup, service_name,
                                                        flip_server: FlipServer):
    client.agent.service.register(service_name, service_id=f"{service_name}-1",
                                  address="127.0.0.1", port=9000,
                                  check=consul.Check.http(flip_server.url, "1s", timeout="1s"))
    cleanup.append(f"{service_name}-1")

    eventually(lambda: passing_ids(client, service_name))
    check = client.agent.checks()[f"service:{service_name}-1"]
    assert check["Type"] == "http" and "200" in check["Output"]

    flip_server.status = 500
    eventually(lambda: not passing_ids(client, service_name))
    flip_server.status = 200
    eventually(lambda: passing_ids(client, service_name))
    assert flip_server.hits >= 3


def test_a_blocking_query_returns_when_the_service_changes(client, cleanup, service_name):
    check_id = register_ttl_service(client, cleanup, service_name, f"{service_name}-1")
    index, _ = client.health.service(service_name)

    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        waiting = pool.submit(client.health.service, service_name, index=index, wait="30s")
        time.sleep(0.5)
        assert not waiting.done()
        client.agent.check.ttl_pass(check_id)
        new_index, [entry] = waiting.result(timeout=20)

    assert time.monotonic() - started < 15
    assert int(new_index) > int(index)
    assert any(check["Status"] == "passing" and check["CheckID"] == check_id
               for check in entry["Checks"])


def test_a_blocking_query_returns_after_wait_when_nothing_changes(client, cleanup, service_name):
    register_ttl_service(client, cleanup, service_name, f"{service_name}-1")
    index, _ = client.health.service(service_name)

    started = time.monotonic()
    same_index, _ = client.health.service(service_name, index=index, wait="1s")

    assert 0.9 <= time.monotonic() - started < 5
    assert same_index == index


def test_the_catalog_lists_services_and_their_instances(client, cleanup, service_name):
    register_ttl_service(client, cleanup, service_name, f"{service_name}-1", tags=["v1"])
    register_ttl_service(client, cleanup, service_name, f"{service_name}-2", tags=["v2"])

    index, names = client.catalog.services()
    assert int(index) > 0 and sorted(names[service_name]) == ["v1", "v2"]
    _, instances = client.catalog.service(service_name)
    assert sorted(i["ServiceID"] for i in instances) == [f"{service_name}-1", f"{service_name}-2"]
    assert {(i["ServiceAddress"], i["ServicePort"]) for i in instances} == {("127.0.0.1", 9000)}
    _, tagged = client.catalog.service(service_name, tag="v2")
    assert [i["ServiceID"] for i in tagged] == [f"{service_name}-2"]


def test_status_leader_names_an_address(client):
    assert ":" in client.status.leader()


def test_unknown_ids_are_404(consul_url, client):
    assert client.agent.check.ttl_pass("no-such-check") is False
    assert client.agent.service.deregister("no-such-service") is False
    answer = raw(consul_url, "PUT", "/v1/agent/check/fail/no-such-check")
    assert answer.status_code == 404 and "Unknown check ID" in answer.text


@pytest.mark.parametrize("method, path, body, reason", [
    ("PUT", "/v1/agent/service/register", "{not json", "Request decode failed"),
    ("PUT", "/v1/agent/service/register", '{"Port": 80}', "Missing service name"),
    ("PUT", "/v1/agent/service/register", '{"Name": "x", "Check": {"TTL": "soon"}}',
     "invalid duration"),
    ("PUT", "/v1/agent/service/register", '{"Name": "x", "Check": {"Name": "no kind"}}',
     "Invalid check"),
    ("GET", "/v1/health/service/x?index=yesterday", None, "Invalid index"),
    ("GET", "/v1/health/service/x?index=1&wait=forever", None, "Invalid wait time"),
])
def test_bad_input_is_a_400_with_the_reason_in_text(consul_url, method, path, body, reason):
    answer = raw(consul_url, method, path, body)
    assert answer.status_code == 400
    assert reason in answer.text


def test_a_service_critical_too_long_is_deregistered(real_consul, client, cleanup,
                                                     service_name):
    if real_consul:
        pytest.skip("Consul reaps after at least 1 minute, every 30 s: too slow for this suite")
    client.agent.service.register(
        service_name, service_id=f"{service_name}-1", port=9000,
        check={**consul.Check.ttl("1s"), "DeregisterCriticalServiceAfter": "1s"})
    cleanup.append(f"{service_name}-1")

    eventually(lambda: f"{service_name}-1" not in client.agent.services(), timeout=10)


def raw(consul_url: str, method: str, path: str, body: str | None = None) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, consul_url + path, data=body, timeout=10)

"""patterns.discovery end to end: registrations heartbeat, balancers see only healthy instances."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from patterns.discovery import Discovery, NoHealthyInstance, Registration
from tests.contract.registry.conftest import FlipServer, eventually


@pytest.fixture
def discovery(consul_url: str) -> Discovery:
    return Discovery(consul_url, timeout=10)


@pytest.fixture
def registrations() -> Iterator[list[Registration]]:
    started: list[Registration] = []
    yield started
    for registration in started:
        registration.stop()


def test_registered_instances_are_balanced_and_leave_on_stop(discovery, registrations,
                                                             service_name):
    for port in (7001, 7002):
        registrations.append(discovery.register(service_name, address="127.0.0.1", port=port))
    balancer = discovery.balancer(service_name, cache_for=0)

    urls = [balancer() for _ in range(4)]
    assert sorted(set(urls)) == ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]
    assert urls[0] != urls[1]  # round robin

    registrations[0].stop()
    assert {balancer() for _ in range(3)} == {"http://127.0.0.1:7002"}
    registrations[1].stop()
    with pytest.raises(NoHealthyInstance):
        balancer()


def test_a_lost_registration_comes_back_on_the_next_heartbeat(discovery, registrations,
                                                              service_name):
    registration = discovery.register(service_name, address="127.0.0.1", port=7003)
    registrations.append(registration)
    discovery.client.agent.service.deregister(registration.service_id)  # as if restarted
    assert discovery.healthy(service_name) == []

    registration.heartbeat()

    [instance] = discovery.healthy(service_name)
    assert instance.service_id == registration.service_id


def test_an_instance_failing_its_http_health_check_drops_out(discovery, registrations,
                                                            service_name,
                                                            flip_server: FlipServer):
    registrations.append(discovery.register(service_name, address="127.0.0.1", port=7004,
                                            health_url=flip_server.url, http_interval=1))
    eventually(lambda: discovery.healthy(service_name))

    flip_server.status = 503
    eventually(lambda: not discovery.healthy(service_name))

"""D. Toxics through the API: create, defaults, conflicts, update, delete, reset."""

from __future__ import annotations

import pytest

from tests.contract.toxiproxy.conftest import ToxiproxyApi
from tests.contract.toxiproxy.toxiproxy_upstreams import connect, fastest_round_trip, round_trip


@pytest.fixture
def proxy(api: ToxiproxyApi, echo) -> str:
    api.create_proxy("p", echo.address)
    return "p"


def test_add_toxic_round_trips(api: ToxiproxyApi, proxy: str) -> None:  # D26
    response = api.post(f"/proxies/{proxy}/toxics", json={
        "name": "foobar", "type": "latency", "stream": "downstream", "toxicity": 0.2,
        "attributes": {"latency": 100, "jitter": 10}})
    assert response.status_code == 200
    expected = {"attributes": {"latency": 100, "jitter": 10}, "name": "foobar", "type": "latency",
                "stream": "downstream", "toxicity": 0.2}
    assert response.json() == expected
    assert api.get(f"/proxies/{proxy}/toxics/foobar").json() == expected
    assert api.get(f"/proxies/{proxy}/toxics").json() == [expected]


def test_defaults_and_both_directions(api: ToxiproxyApi, proxy: str) -> None:  # D27
    down = api.post(f"/proxies/{proxy}/toxics", json={"type": "latency"}).json()
    up = api.post(f"/proxies/{proxy}/toxics", json={"type": "latency", "stream": "upstream"}).json()
    assert (down["name"], down["stream"], down["toxicity"]) == ("latency_downstream", "downstream", 1)
    assert up["name"] == "latency_upstream"


def test_listing_order_upstream_first_then_insertion(api: ToxiproxyApi, proxy: str) -> None:  # D28
    api.add_toxic(proxy, "latency", name="latency1")
    api.add_toxic(proxy, "latency", name="latency2")
    api.add_toxic(proxy, "noop", stream="upstream", name="up")
    names = [t["name"] for t in api.get(f"/proxies/{proxy}/toxics").json()]
    assert names == ["up", "latency1", "latency2"]
    assert api.get(f"/proxies/{proxy}/toxics/latency1").json()["attributes"] == {"latency": 0, "jitter": 0}


def test_name_conflicts_across_types_and_directions(api: ToxiproxyApi, proxy: str) -> None:  # D29
    original = api.add_toxic(proxy, "latency", name="t", latency=5)
    other_type = api.post(f"/proxies/{proxy}/toxics", json={"name": "t", "type": "bandwidth"})
    other_direction = api.post(f"/proxies/{proxy}/toxics", json={"name": "t", "type": "latency", "stream": "upstream"})
    assert other_type.status_code == other_direction.status_code == 409
    assert api.get(f"/proxies/{proxy}/toxics/t").json() == original


def test_noop_and_invalid_types(api: ToxiproxyApi, proxy: str) -> None:  # D30
    noop = api.post(f"/proxies/{proxy}/toxics", json={"type": "noop"}).json()
    assert noop == {"attributes": {}, "name": "noop_downstream", "type": "noop", "stream": "downstream", "toxicity": 1}
    for body in ({"type": "gremlin"}, {"name": "x"}, {"type": ""}):
        response = api.post(f"/proxies/{proxy}/toxics", json=body)
        assert (response.status_code, response.json()["error"]) == (400, "invalid toxic type")


def test_stream_validation_and_verbatim_echo(api: ToxiproxyApi, proxy: str) -> None:  # D31
    for stream in ("walrustream", ""):
        response = api.post(f"/proxies/{proxy}/toxics", json={"type": "latency", "stream": stream})
        assert response.status_code == 400
    upper = api.post(f"/proxies/{proxy}/toxics", json={"type": "latency", "stream": "UPSTREAM"}).json()
    assert (upper["name"], upper["stream"]) == ("latency_UPSTREAM", "UPSTREAM")


def test_attribute_decoding(api: ToxiproxyApi, proxy: str) -> None:  # D32
    for bad in ({"latency": 100.0}, {"latency": "100"}, {"latency": 1e3}):
        assert api.post(f"/proxies/{proxy}/toxics", json={"type": "latency", "attributes": bad}).status_code == 400
    assert api.post(f"/proxies/{proxy}/toxics", json={"type": "latency", "toxicity": "high"}).status_code == 400
    dropped = api.post(f"/proxies/{proxy}/toxics", json={"type": "latency", "attributes": {"latency": 7, "colour": 1}})
    assert dropped.json()["attributes"] == {"latency": 7, "jitter": 0}
    nulls = api.post(f"/proxies/{proxy}/toxics", json={
        "type": "bandwidth", "name": None, "stream": None, "toxicity": None, "attributes": None}).json()
    assert nulls == {"attributes": {"rate": 0}, "name": "bandwidth_downstream", "type": "bandwidth",
                     "stream": "downstream", "toxicity": 1}


def test_update_merges_and_keeps_toxicity(api: ToxiproxyApi, proxy: str) -> None:  # D33
    api.add_toxic(proxy, "latency", name="t", latency=100, jitter=10)
    first = api.update_toxic(proxy, "t", toxicity=0.5, attributes={"latency": 1000})
    assert first["attributes"] == {"latency": 1000, "jitter": 10} and first["toxicity"] == 0.5
    second = api.post(f"/proxies/{proxy}/toxics/t", json={
        "attributes": {"jitter": 7}, "name": "renamed", "type": "bandwidth", "stream": "upstream"}).json()
    assert second == {"attributes": {"latency": 1000, "jitter": 7}, "name": "t", "type": "latency",
                      "stream": "downstream", "toxicity": 0.5}
    assert api.patch(f"/proxies/{proxy}/toxics/missing", data=b"not json").status_code == 404
    assert api.patch(f"/proxies/{proxy}/toxics/t", data=b"").json()["error"] == "bad request body: EOF"


def test_delete_and_missing_proxy_everywhere(api: ToxiproxyApi, proxy: str) -> None:  # D34
    api.add_toxic(proxy, "noop", name="t")
    assert api.delete(f"/proxies/{proxy}/toxics/t").status_code == 204
    assert api.delete(f"/proxies/{proxy}/toxics/t").status_code == 404
    assert api.get(f"/proxies/{proxy}/toxics").json() == []
    for method, path in (("GET", "/toxics"), ("POST", "/toxics"), ("GET", "/toxics/t"),
                         ("PATCH", "/toxics/t"), ("DELETE", "/toxics/t")):
        response = api.request(method, f"/proxies/missing{path}", json={"type": "noop"})
        assert (response.status_code, response.json()["error"]) == (404, "proxy not found")


def test_reset_enables_all_strips_toxics_keeps_connections(api: ToxiproxyApi, echo, proxy: str) -> None:  # D35
    port = int(api.get(f"/proxies/{proxy}").json()["listen"].rsplit(":", 1)[1])
    api.create_proxy("off", echo.address, enabled=False)
    api.add_toxic(proxy, "latency", latency=100, jitter=10)
    api.add_toxic(proxy, "noop", stream="upstream")
    client = connect(port)
    round_trip(client, b"before")
    for _ in range(2):
        response = api.post("/reset")
        assert (response.status_code, response.content) == (204, b"")
        round_trip(client, b"still connected")
    proxies = api.get("/proxies").json()
    assert all(p["enabled"] and p["toxics"] == [] for p in proxies.values())
    assert fastest_round_trip(client, b"fast again") < 0.1 / 2  # the 100 ms toxic is gone
    client.close()

"""C. POST /populate: validate everything first, then add or replace proxies in order."""

from __future__ import annotations

from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import EchoServer, connect, free_port, is_refused, round_trip


def test_populate_two_proxies_in_order(api: ToxiproxyApi, echo: EchoServer) -> None:  # C19
    body = [{"name": "one", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"name": "two", "listen": "127.0.0.1:0", "upstream": echo.address}]
    response = api.post("/populate", json=body)
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    proxies = response.json()["proxies"]
    assert [p["name"] for p in proxies] == ["one", "two"]
    for proxy in proxies:
        assert proxy["enabled"] is True
        with connect(listen_port(proxy)) as client:
            round_trip(client, proxy["name"].encode())


def test_populate_default_enabled_and_disabled_entry(api: ToxiproxyApi, echo: EchoServer) -> None:  # C20
    down_port = free_port()
    body = [{"name": "up", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"name": "down", "listen": f"127.0.0.1:{down_port}", "upstream": echo.address, "enabled": False}]
    up, down = api.post("/populate", json=body).json()["proxies"]
    assert up["enabled"] is True and down["enabled"] is False
    assert is_refused(down_port)
    with connect(listen_port(up)) as client:
        round_trip(client, b"up")


def test_populate_keeps_identical_proxy_and_replaces_changed_one(api: ToxiproxyApi, echo: EchoServer) -> None:  # C21
    port = free_port()
    api.create_proxy("same", echo.address, listen=f"127.0.0.1:{port}")
    api.add_toxic("same", "latency", latency=10)
    moved = api.create_proxy("moved", echo.address)
    api.add_toxic("moved", "latency", latency=10)
    client = connect(port)
    round_trip(client, b"before")
    body = [{"name": "same", "listen": f"localhost:{port}", "upstream": echo.address},
            {"name": "moved", "listen": "127.0.0.1:0", "upstream": echo.address}]
    same, replaced = api.post("/populate", json=body).json()["proxies"]
    assert same["listen"] == f"127.0.0.1:{port}" and len(same["toxics"]) == 1
    round_trip(client, b"connection survived")
    assert replaced["toxics"] == [] and replaced["listen"] != moved["listen"]
    client.close()


def test_populate_bad_name_changes_nothing(api: ToxiproxyApi, echo: EchoServer) -> None:  # C22
    body = [{"name": "ok", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"listen": "127.0.0.1:0", "upstream": echo.address}]
    response = api.post("/populate", json=body)
    assert response.status_code == 400
    assert response.content == b'{"error":"missing required field: name at proxy 2","status":400,"proxies":null}'
    assert api.get("/proxies").json() == {}
    missing_upstream = api.post("/populate", json=[{"name": "x"}])
    assert missing_upstream.json()["error"] == "missing required field: upstream at proxy 1"


def test_populate_bad_listen_keeps_earlier_entries(api: ToxiproxyApi, echo: EchoServer) -> None:  # C23
    body = [{"name": "first", "listen": "127.0.0.1:0", "upstream": echo.address},
            {"name": "second", "listen": "local373", "upstream": echo.address},
            {"name": "third", "listen": "127.0.0.1:0", "upstream": echo.address}]
    response = api.post("/populate", json=body)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"
    assert not response.content.endswith(b"\n")
    result = response.json()
    assert result["status"] == 500 and "local373" in result["error"]
    assert [p["name"] for p in result["proxies"]] == ["first"]
    assert list(api.get("/proxies").json()) == ["first"]


def test_populate_leaves_disabled_identical_proxy_disabled(api: ToxiproxyApi, echo: EchoServer) -> None:  # C24
    port = free_port()
    api.create_proxy("p", echo.address, listen=f"127.0.0.1:{port}")
    api.set_enabled("p", False)
    body = [{"name": "p", "listen": f"127.0.0.1:{port}", "upstream": echo.address, "enabled": True}]
    assert api.post("/populate", json=body).json()["proxies"][0]["enabled"] is False


def test_populate_empty_and_object_bodies(api: ToxiproxyApi) -> None:  # C24
    empty = api.post("/populate", json=[])
    assert (empty.status_code, empty.content) == (201, b'{"proxies":null}')
    wrong = api.post("/populate", json={"proxies": []})
    assert wrong.status_code == 400
    assert wrong.json()["error"].startswith("bad request body: json: cannot unmarshal object into Go value of type []")


def test_toxic_on_populated_proxy(api: ToxiproxyApi, echo: EchoServer) -> None:  # C25
    proxy = api.post("/populate", json=[{"name": "p", "listen": "127.0.0.1:0", "upstream": echo.address}]).json()
    toxic = api.add_toxic("p", "latency", latency=5)
    assert api.get("/proxies/p").json()["toxics"] == [toxic]
    with connect(listen_port(proxy["proxies"][0])) as client:
        assert round_trip(client, b"slow") >= 0.005

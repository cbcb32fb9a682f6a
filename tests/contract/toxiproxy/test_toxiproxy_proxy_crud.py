"""B. Proxies: create, show, update, delete, and how `listen` is reported."""

from __future__ import annotations

import pytest

from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import (
    EchoServer,
    connect,
    free_port,
    is_refused,
    recv_until_eof,
    round_trip,
)


def test_create_reports_resolved_listen(api: ToxiproxyApi, echo: EchoServer) -> None:  # B8
    port = free_port()
    response = api.post("/proxies", json={"name": "p", "listen": f"localhost:{port}", "upstream": "example.invalid:80"})
    assert response.status_code == 201
    proxy = response.json()
    assert proxy == {"name": "p", "listen": f"127.0.0.1:{port}", "upstream": "example.invalid:80",
                     "enabled": True, "Logger": {}, "toxics": []}
    assert api.get("/proxies").json() == {"p": proxy}
    assert api.get("/proxies/p").json() == proxy


def test_name_conflict_is_checked_before_the_port(api: ToxiproxyApi, echo: EchoServer) -> None:  # B10
    port = listen_port(api.create_proxy("p", echo.address))
    response = api.post("/proxies", json={"name": "p", "listen": f"127.0.0.1:{port}", "upstream": echo.address})
    assert response.status_code == 409
    api.delete("/proxies/p")
    assert api.post("/proxies", json={"name": "p", "upstream": echo.address, "listen": "127.0.0.1:0"}).status_code == 201


def test_port_conflict_does_not_create(api: ToxiproxyApi, echo: EchoServer) -> None:  # B11
    port = listen_port(api.create_proxy("first", echo.address))
    body = {"name": "second", "listen": f"127.0.0.1:{port}", "upstream": echo.address}
    assert api.post("/proxies", json=body).status_code == 500
    assert list(api.get("/proxies").json()) == ["first"]
    api.delete("/proxies/first")
    assert api.post("/proxies", json=body).status_code == 201


def test_port_zero_and_wildcards(api: ToxiproxyApi, echo: EchoServer, compat: bool) -> None:  # B12
    assert listen_port(api.create_proxy("zero", echo.address)) > 0
    # The real server listens on every interface; ours binds the API's host (loopback) instead.
    wildcard_host = "127.0.0.1" if compat else "[::]"
    for name, listen in (("none", None), ("any", "0.0.0.0:0")):
        body = {"name": name, "upstream": echo.address} | ({"listen": listen} if listen else {})
        proxy = api.post("/proxies", json=body).json()
        host, port = proxy["listen"].rsplit(":", 1)
        assert host == wildcard_host and int(port) > 0
        with connect(int(port)) as client:
            round_trip(client, b"ping")


def test_created_disabled_then_enabled_then_disabled(api: ToxiproxyApi, echo: EchoServer) -> None:  # B13
    port = free_port()
    proxy = api.create_proxy("p", echo.address, listen=f"localhost:{port}", enabled=False)
    assert proxy["listen"] == f"localhost:{port}" and proxy["enabled"] is False
    assert is_refused(port)
    assert api.set_enabled("p", True)["listen"] == f"127.0.0.1:{port}"
    with connect(port) as client:
        round_trip(client, b"up")
    assert api.set_enabled("p", False)["enabled"] is False
    assert is_refused(port)


def test_partial_update_and_post_equals_patch(api: ToxiproxyApi, echo: EchoServer) -> None:  # B14
    created = api.create_proxy("p", echo.address)
    disabled = api.post("/proxies/p", json={"enabled": False, "name": "renamed"})
    assert disabled.status_code == 200
    assert disabled.json() == created | {"enabled": False}
    enabled = api.patch("/proxies/p", json={"enabled": True})
    assert enabled.json()["enabled"] is True and enabled.json()["name"] == "p"
    assert api.patch("/proxies/missing", json={}).status_code == 404
    empty = api.patch("/proxies/p", data=b"")
    assert (empty.status_code, empty.json()["error"]) == (400, "bad request body: EOF")


def test_listen_change_drops_connections_same_host_keeps_them(api: ToxiproxyApi, echo: EchoServer) -> None:  # B15
    port = listen_port(api.create_proxy("p", echo.address))
    client = connect(port)
    round_trip(client, b"before")
    same = api.patch("/proxies/p", json={"listen": f"localhost:{port}"}).json()
    assert same["listen"] == f"127.0.0.1:{port}"
    round_trip(client, b"still here")
    moved = api.patch("/proxies/p", json={"listen": "127.0.0.1:0"}).json()
    new_port = listen_port(moved)
    assert new_port != port and moved["enabled"] is True
    assert recv_until_eof(client) == b""
    with connect(new_port) as again:
        round_trip(again, b"after")


def test_upstream_change_drops_connections(api: ToxiproxyApi, echo: EchoServer) -> None:  # B16
    other = EchoServer()
    try:
        port = listen_port(api.create_proxy("p", echo.address))
        client = connect(port)
        round_trip(client, b"one")
        api.patch("/proxies/p", json={"upstream": echo.address})
        round_trip(client, b"same upstream keeps it")
        api.patch("/proxies/p", json={"upstream": other.address})
        assert recv_until_eof(client) == b""
        with connect(port) as again:
            round_trip(again, b"new upstream")
        assert other.wait_for_connection().data.startswith(b"new")
    finally:
        other.close()


def test_delete_closes_port_and_second_delete_404(api: ToxiproxyApi, echo: EchoServer) -> None:  # B17
    port = listen_port(api.create_proxy("p", echo.address))
    client = connect(port)
    round_trip(client, b"x")
    assert api.delete("/proxies/p").status_code == 204
    assert recv_until_eof(client) == b""
    assert is_refused(port)
    assert api.get("/proxies").json() == {}
    response = api.delete("/proxies/p")
    assert (response.status_code, response.json()["error"]) == (404, "proxy not found")


def test_go_decoding_rules(api: ToxiproxyApi, echo: EchoServer) -> None:  # B18
    upper = api.post("/proxies", data=f'{{"NAME":"up","UPSTREAM":"{echo.address}","Listen":"127.0.0.1:0"}}')
    assert upper.status_code == 201 and upper.json()["name"] == "up"
    duplicate = api.post("/proxies", data=f'{{"name":"a","name":"dup","upstream":"{echo.address}","listen":"127.0.0.1:0"}}')
    assert duplicate.json()["name"] == "dup"
    unknown = api.post("/proxies", json={"name": "u", "upstream": echo.address, "listen": "127.0.0.1:0",
                                         "colour": "red", "toxics": [{"type": "latency"}], "Logger": {}})
    assert unknown.status_code == 201 and unknown.json()["toxics"] == []
    trailing = api.post("/proxies", data=f'{{"name":"t","upstream":"{echo.address}","listen":"127.0.0.1:0"}} trailing')
    assert trailing.status_code == 201
    wrong = api.post("/proxies", json={"name": "w", "upstream": echo.address, "enabled": "yes"})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == (
        "bad request body: json: cannot unmarshal string into Go struct field Proxy.enabled of type bool"
    )
    nulls = api.patch("/proxies/up", json={"enabled": None, "upstream": None})
    assert nulls.json()["enabled"] is True and nulls.json()["upstream"] == echo.address


@pytest.mark.parametrize("listen", ["bogus", "127.0.0.1:99999"])
def test_bad_listen_on_disabled_proxy_fails_only_when_enabled(api: ToxiproxyApi, echo: EchoServer, listen: str) -> None:  # B/§10
    assert api.create_proxy("p", echo.address, listen=listen, enabled=False)["listen"] == listen
    response = api.patch("/proxies/p", json={"enabled": True})
    assert response.status_code == 500
    assert "port" in response.json()["error"]

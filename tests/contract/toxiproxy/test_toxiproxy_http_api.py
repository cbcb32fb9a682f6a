"""A. The HTTP surface: status codes, headers and exact bodies, including the error catalogue."""

from __future__ import annotations

import re

import pytest

from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port

TEXT = "text/plain; charset=utf-8"


def assert_error(response, status: int, message: str) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == TEXT
    assert response.content == f'{{"error":"{message}","status":{status}}}\n'.encode()


def test_version_body_and_content_type(api: ToxiproxyApi) -> None:  # A1
    response = api.get("/version")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=utf-8"
    assert re.fullmatch(rb'\{"version": "[^"]+"\}\n', response.content)


@pytest.mark.parametrize("path", ["/version", "/proxies", "/proxies/nope"])
def test_browsers_are_refused_on_matched_routes(api: ToxiproxyApi, path: str) -> None:  # A2
    response = api.get(path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert response.status_code == 403
    assert response.headers["Content-Type"] == TEXT
    assert response.content == b"User agent not allowed\n"
    assert "X-Toxiproxy-Request-Id" in response.headers


@pytest.mark.parametrize("agent", ["Wget/2.1", "python-requests/2.34", "curl/8.0"])
def test_other_user_agents_are_served(api: ToxiproxyApi, agent: str) -> None:  # A2
    assert api.get("/proxies", headers={"User-Agent": agent}).status_code == 200


def test_browser_block_runs_only_on_matched_routes(api: ToxiproxyApi) -> None:  # A2
    mozilla = {"User-Agent": "Mozilla/5.0"}
    assert api.get("/nothing-here", headers=mozilla).status_code == 404
    assert api.request("PUT", "/proxies", headers=mozilla).status_code == 405


def test_request_id_on_matched_routes_only(api: ToxiproxyApi) -> None:  # A3
    for response in (api.get("/version"), api.get("/proxies/missing")):
        assert re.fullmatch(r"[0-9a-v]{20}", response.headers["X-Toxiproxy-Request-Id"])
    assert "X-Toxiproxy-Request-Id" not in api.get("/nothing-here").headers
    assert "X-Toxiproxy-Request-Id" not in api.request("PUT", "/proxies").headers


@pytest.mark.parametrize("path", ["/nothing", "/proxies/", "/proxies/a/b", "/proxies/a/toxics/b/c", "/"])
def test_unknown_paths_get_go_404(api: ToxiproxyApi, path: str) -> None:  # A4
    response = api.get(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == TEXT
    assert response.content == b"404 page not found\n"


@pytest.mark.parametrize(
    "method, path",
    [("PUT", "/proxies"), ("HEAD", "/proxies"), ("OPTIONS", "/proxies"), ("GET", "/reset"),
     ("POST", "/version"), ("GET", "/populate"), ("PUT", "/proxies/x/toxics/y"), ("PATCH", "/proxies")],
)
def test_known_paths_with_wrong_method_get_empty_405(api: ToxiproxyApi, method: str, path: str) -> None:  # A4
    response = api.request(method, path)
    assert response.status_code == 405
    assert response.content == b""
    assert "Content-Type" not in response.headers


def test_error_catalogue(api: ToxiproxyApi, echo) -> None:  # A5
    assert_error(api.post("/proxies", data=b""), 400, "bad request body: EOF")
    assert_error(api.post("/proxies", data=b"garbage"), 400,
                 "bad request body: invalid character 'g' looking for beginning of value")
    assert_error(api.post("/proxies", json={"upstream": echo.address}), 400, "missing required field: name")
    assert_error(api.post("/proxies", json={"name": "a"}), 400, "missing required field: upstream")
    assert_error(api.get("/proxies/missing"), 404, "proxy not found")
    assert_error(api.get("/proxies/missing/toxics"), 404, "proxy not found")
    api.create_proxy("a", echo.address)
    assert_error(api.post("/proxies", json={"name": "a", "upstream": echo.address}), 409, "proxy already exists")
    assert_error(api.post("/proxies/a/toxics", json={"type": "latency", "stream": "sideways"}), 400,
                 "stream was invalid, can be either upstream or downstream")
    assert_error(api.post("/proxies/a/toxics", json={"type": "gremlin"}), 400, "invalid toxic type")
    assert_error(api.get("/proxies/a/toxics/none"), 404, "toxic not found")
    api.add_toxic("a", "latency")
    assert_error(api.post("/proxies/a/toxics", json={"type": "latency"}), 409, "toxic already exists")
    assert_error(api.post("/proxies", json={"name": "b", "upstream": "x:1", "listen": "bogus"}), 500,
                 "listen tcp: address bogus: missing port in address")
    assert_error(
        api.post("/proxies/a/toxics", json={"name": "f", "type": "latency", "attributes": {"latency": 100.0}}),
        400,
        "bad request body: json: cannot unmarshal number 100.0 into Go struct field "
        "LatencyToxic.attributes.latency of type int64",
    )
    assert_error(
        api.post("/proxies/a/toxics", json={"type": "noop", "attributes": []}), 400,
        "bad request body: json: cannot unmarshal array into Go struct field "
        "ToxicWrapper.attributes of type toxics.NoopToxic",
    )


def test_port_in_use_error_names_the_address(api: ToxiproxyApi, echo) -> None:  # A5
    port = listen_port(api.create_proxy("first", echo.address))
    response = api.post("/proxies", json={"name": "second", "listen": f"127.0.0.1:{port}", "upstream": echo.address})
    assert_error(response, 500, f"listen tcp 127.0.0.1:{port}: bind: address already in use")


def test_empty_index_and_sorted_names(api: ToxiproxyApi, echo) -> None:  # A6
    assert api.get("/proxies").content == b"{}"
    for name in ("zeta", "alpha", "Mid", "beta"):
        api.create_proxy(name, echo.address)
    assert list(api.get("/proxies").json()) == ["Mid", "alpha", "beta", "zeta"]


def test_proxy_json_is_byte_exact(api: ToxiproxyApi, echo) -> None:  # A7
    response = api.post("/proxies", json={"name": "p1", "listen": "127.0.0.1:0", "upstream": echo.address})
    port = listen_port(response.json())
    expected = (
        f'{{"name":"p1","listen":"127.0.0.1:{port}","upstream":"{echo.address}","enabled":true,'
        f'"Logger":{{}},"toxics":[]}}'
    ).encode()
    assert response.content == expected
    assert response.headers["Content-Type"] == "application/json"
    assert api.get("/proxies/p1").content == expected


@pytest.mark.parametrize(
    "toxic_type, attributes",
    [
        ("latency", '{"latency":0,"jitter":0}'),
        ("bandwidth", '{"rate":0}'),
        ("slow_close", '{"delay":0}'),
        ("timeout", '{"timeout":0}'),
        ("reset_peer", '{"timeout":0}'),
        ("slicer", '{"average_size":0,"size_variation":0,"delay":0}'),
        ("limit_data", '{"bytes":0}'),
        ("noop", "{}"),
    ],
)
def test_toxic_json_is_byte_exact(api: ToxiproxyApi, echo, toxic_type: str, attributes: str) -> None:  # A7
    api.create_proxy("p", echo.address, enabled=False)
    response = api.post("/proxies/p/toxics", json={"type": toxic_type, "stream": "upstream", "toxicity": 0.5})
    expected = (
        f'{{"attributes":{attributes},"name":"{toxic_type}_upstream","type":"{toxic_type}",'
        f'"stream":"upstream","toxicity":0.5}}'
    ).encode()
    assert response.status_code == 200
    assert response.content == expected
    assert api.get(f"/proxies/p/toxics/{toxic_type}_upstream").content == expected


@pytest.mark.parametrize("sent, shown", [(1, "1"), (0.1, "0.1"), (0.123456789, "0.12345679"), (1e-7, "1e-7"), (2, "2")])
def test_toxicity_is_shown_as_shortest_float32(api: ToxiproxyApi, echo, sent: float, shown: str) -> None:  # A7
    api.create_proxy("p", echo.address, enabled=False)
    response = api.post("/proxies/p/toxics", json={"type": "noop", "toxicity": sent})
    assert response.content.endswith(f'"toxicity":{shown}}}'.encode())

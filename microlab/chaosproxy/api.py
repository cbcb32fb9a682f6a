"""Toxiproxy's HTTP API: routes, request decoding and responses, byte for byte.

Routes (success status):

    GET  /version                               200  {"version": "..."}\\n
    GET  /metrics                               200  Prometheus text (only with -proxy-metrics)
    POST /reset                                 204  enable all proxies, remove all toxics
    GET  /proxies                               200  {name: proxy}, names sorted
    POST /proxies                               201  create
    POST /populate                              201  {"proxies": [...]}: add or replace many
    GET  /proxies/{proxy}                       200
    POST|PATCH  /proxies/{proxy}                200  partial update
    DELETE      /proxies/{proxy}                204
    GET  /proxies/{proxy}/toxics                200
    POST /proxies/{proxy}/toxics                200  (not 201, as in Toxiproxy)
    GET  /proxies/{proxy}/toxics/{toxic}        200
    POST|PATCH  /proxies/{proxy}/toxics/{toxic} 200  attributes are merged
    DELETE      /proxies/{proxy}/toxics/{toxic} 204

An unknown path gets Go's plain-text 404, a known path with another method an empty 405, and
a browser (User-Agent `Mozilla/...`) a 403. Errors are `{"error":...,"status":...}` plus a
newline, sent as text/plain because Go's `http.Error` overrides the content type.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import random
import socket
import struct
import time
from hashlib import md5
from typing import Any, Awaitable, Callable

from .collection import ProxyCollection, ProxySpec
from .errors import (
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    TOXIC_EXISTS,
    ApiError,
    bad_request_body,
    missing_field,
)
from .gojson import Float32, GoJsonError, decode_fields, decode_first_value, encode, kind_of
from .http11 import Request, Response
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .toxics import DIRECTIONS, TOXIC_TYPES

VERSION = "2.12.0+chaosproxy"  # the Toxiproxy release whose API this server reproduces
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

PROXY_FIELDS = {
    "name": "string",
    "listen": "string",
    "upstream": "string",
    "enabled": "bool",
    "Logger": "object:zerolog.Logger",
}
TOXIC_FIELDS = {
    "attributes": "object:toxics.NoopToxic",
    "name": "string",
    "type": "string",
    "stream": "string",
    "toxicity": "float32",
}
POPULATE_ENTRY = 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'
TOXIC_UPDATE = (
    'struct { Attributes interface {} "json:\\"attributes\\""; Toxicity float32 "json:\\"toxicity\\"" }'
)

Route = Callable[..., Awaitable[Response]]


class Api:
    """Maps HTTP requests onto a ProxyCollection. One request is handled at a time."""

    def __init__(self, proxies: ProxyCollection) -> None:
        self.proxies = proxies
        self._lock = asyncio.Lock()
        self._routes: list[tuple[tuple[str, ...], dict[str, Route]]] = [
            (("reset",), {"POST": self.reset}),
            (("proxies",), {"GET": self.list_proxies, "POST": self.create_proxy}),
            (("populate",), {"POST": self.populate}),
            (("proxies", "{}"), {
                "GET": self.show_proxy, "POST": self.update_proxy,
                "PATCH": self.update_proxy, "DELETE": self.delete_proxy,
            }),
            (("proxies", "{}", "toxics"), {"GET": self.list_toxics, "POST": self.create_toxic}),
            (("proxies", "{}", "toxics", "{}"), {
                "GET": self.show_toxic, "POST": self.update_toxic,
                "PATCH": self.update_toxic, "DELETE": self.delete_toxic,
            }),
            (("version",), {"GET": self.version}),
        ]
        if proxies.metrics is not None:  # as in Go, the route exists only when metrics are on
            self._routes.append((("metrics",), {"GET": self.metrics}))

    async def handle(self, request: Request) -> Response:
        route, params = self._match(request.path)
        if route is None:
            return Response(404, b"404 page not found\n", _text_headers())
        handler = route.get(request.method)
        if handler is None:
            return Response(405)
        response = await self._run(handler, request, params)
        response.headers.append(("X-Toxiproxy-Request-Id", new_request_id()))
        return response

    def _match(self, path: str) -> tuple[dict[str, Route] | None, list[str]]:
        segments = path.split("/")
        if segments[0] != "":
            return None, []
        segments = segments[1:]
        for pattern, methods in self._routes:
            if len(pattern) == len(segments) and all(
                p == s or (p == "{}" and s) for p, s in zip(pattern, segments)
            ):
                return methods, [s for p, s in zip(pattern, segments) if p == "{}"]
        return None, []

    async def _run(self, handler: Route, request: Request, params: list[str]) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return Response(403, b"User agent not allowed\n", _text_headers())
        try:
            async with self._lock:
                return await handler(request, *params)
        except ApiError as error:
            return error_response(error)

    # Proxies

    async def list_proxies(self, request: Request) -> Response:
        return json_response(200, {proxy.name: proxy.to_json() for proxy in self.proxies.sorted()})

    async def create_proxy(self, request: Request) -> Response:
        fields = _decode(request.body, "Proxy", PROXY_FIELDS, "toxiproxy.Proxy")
        if not fields.get("name"):
            raise missing_field("name")
        if not fields.get("upstream"):
            raise missing_field("upstream")
        spec = ProxySpec(
            fields["name"], fields.get("listen", ""), fields["upstream"], fields.get("enabled", True)
        )
        proxy = await self.proxies.create(spec)
        return json_response(201, proxy.to_json())

    async def populate(self, request: Request) -> Response:
        try:
            specs = decode_populate(request.body)
        except ApiError as error:
            specs, failure = None, error
        if specs is not None:
            populated, failure = await self.proxies.populate(specs)
        else:
            populated = []
        listed = [proxy.to_json() for proxy in populated] or None
        if failure is None:
            return json_response(201, {"proxies": listed})
        # Unlike other errors, populate's is real JSON, lists what was done, and has no newline.
        body = {"error": failure.message, "status": failure.status, "proxies": listed}
        return json_response(failure.status, body)

    async def show_proxy(self, request: Request, name: str) -> Response:
        return json_response(200, self.proxies.get(name).to_json())

    async def update_proxy(self, request: Request, name: str) -> Response:
        proxy = self.proxies.get(name)
        fields = _decode(request.body, "Proxy", PROXY_FIELDS, "toxiproxy.Proxy")
        await proxy.update(
            fields.get("listen", proxy.listen),
            fields.get("upstream", proxy.upstream),
            fields.get("enabled", proxy.enabled),
        )
        return json_response(200, proxy.to_json())

    async def delete_proxy(self, request: Request, name: str) -> Response:
        await self.proxies.delete(name)
        return Response(204)

    async def reset(self, request: Request) -> Response:
        await self.proxies.reset()
        return Response(204)

    # Toxics

    async def list_toxics(self, request: Request, name: str) -> Response:
        proxy = self.proxies.get(name)
        return json_response(200, [toxic.to_json() for toxic in proxy.all_toxics()])

    async def create_toxic(self, request: Request, name: str) -> Response:
        proxy = self.proxies.get(name)
        fields = _decode(request.body, "ToxicWrapper", TOXIC_FIELDS, "toxics.ToxicWrapper")
        stream = fields.get("stream", "downstream")
        if stream.lower() not in DIRECTIONS:
            raise INVALID_STREAM
        toxic_type = fields.get("type", "")
        toxic_name = fields.get("name") or f"{toxic_type}_{stream}"
        toxic_class = TOXIC_TYPES.get(toxic_type)
        if toxic_class is None:
            raise INVALID_TOXIC_TYPE
        if proxy.find_toxic(toxic_name):
            raise TOXIC_EXISTS
        attributes = _decode_attributes(fields.get("attributes"), toxic_class.go_struct,
                                        toxic_class.attribute_types)
        toxic = toxic_class(toxic_name, stream, fields.get("toxicity", Float32(1)), attributes)
        await proxy.add_toxic(toxic)
        return json_response(200, toxic.to_json())

    async def show_toxic(self, request: Request, name: str, toxic_name: str) -> Response:
        return json_response(200, self.proxies.get(name).get_toxic(toxic_name).to_json())

    async def update_toxic(self, request: Request, name: str, toxic_name: str) -> Response:
        proxy = self.proxies.get(name)
        toxic = proxy.get_toxic(toxic_name)
        update_fields = {
            "attributes": f"object:toxics.{toxic.go_struct}",
            "toxicity": "float32",
        }
        fields = _decode(request.body, "", update_fields, TOXIC_UPDATE)
        attributes = _decode_attributes(fields.get("attributes"), toxic.go_struct, toxic.attribute_types)
        await proxy.update_toxic(toxic, attributes, fields.get("toxicity"))
        return json_response(200, toxic.to_json())

    async def delete_toxic(self, request: Request, name: str, toxic_name: str) -> Response:
        proxy = self.proxies.get(name)
        await proxy.remove_toxic(proxy.get_toxic(toxic_name))
        return Response(204)

    async def metrics(self, request: Request) -> Response:
        assert self.proxies.metrics is not None
        return Response(200, self.proxies.metrics.render(), [("Content-Type", METRICS_TYPE)])

    async def version(self, request: Request) -> Response:
        body = f'{{"version": "{VERSION}"}}\n'.encode()
        return Response(200, body, [("Content-Type", "application/json;charset=utf-8")])


def _decode(body: bytes, go_struct: str, fields: dict[str, str], go_type: str) -> dict[str, Any]:
    try:
        return decode_fields(decode_first_value(body), go_struct, fields, go_type)
    except GoJsonError as error:
        raise bad_request_body(str(error)) from None


def _decode_attributes(attributes: Any, go_struct: str, types: dict[str, str]) -> dict[str, int]:
    try:
        return decode_fields(attributes, go_struct, types, f"toxics.{go_struct}", "attributes.")
    except GoJsonError as error:
        raise bad_request_body(str(error)) from None


def decode_populate(body: bytes) -> list[ProxySpec]:
    try:
        entries = decode_first_value(body)
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise GoJsonError(
                f"json: cannot unmarshal {kind_of(entries)} into Go value of type []{POPULATE_ENTRY}"
            )
        specs = []
        for entry in entries:
            fields = decode_fields(entry, "", PROXY_FIELDS, POPULATE_ENTRY)
            specs.append(ProxySpec(fields.get("name", ""), fields.get("listen", ""),
                                   fields.get("upstream", ""), fields.get("enabled", True)))
        return specs
    except GoJsonError as error:
        raise bad_request_body(str(error)) from None


def json_response(status: int, body: Any) -> Response:
    return Response(status, encode(body), [("Content-Type", JSON)])


def error_response(error: ApiError) -> Response:
    body = encode({"error": error.message, "status": error.status}) + b"\n"
    return Response(error.status, body, _text_headers())


def _text_headers() -> list[tuple[str, str]]:
    return [("Content-Type", TEXT), ("X-Content-Type-Options", "nosniff")]


# Request ids in the xid format Toxiproxy uses: 12 bytes (time, machine, pid, counter) in
# lower-case base32hex, 20 characters.
_MACHINE = md5(socket.gethostname().encode()).digest()[:3]
_COUNTER = itertools.count(random.SystemRandom().randrange(1 << 24))


def new_request_id() -> str:
    raw = (
        struct.pack(">I", int(time.time()))
        + _MACHINE
        + struct.pack(">H", os.getpid() & 0xFFFF)
        + (next(_COUNTER) & 0xFFFFFF).to_bytes(3, "big")
    )
    return base64.b32hexencode(raw).decode().rstrip("=").lower()

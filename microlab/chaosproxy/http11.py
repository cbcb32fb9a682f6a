"""Just enough HTTP/1.1 for a small JSON API, on asyncio streams.

Requests with Content-Length or chunked bodies, keep-alive, `Expect: 100-continue`, and an
idle timeout. Routing and everything else about the API lives in `api.py`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Awaitable, Callable
from urllib.parse import unquote, urlsplit

IDLE_TIMEOUT = 60.0  # seconds a kept-alive connection may wait for its next request
READ_TIMEOUT = 15.0  # seconds to read a request once it has started (Go's ReadTimeout)
MAX_HEADERS = 100
MAX_BODY = 10 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query string
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    pass


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """Answer requests on one client connection until it closes or asks to."""
    try:
        while True:
            async with asyncio.timeout(IDLE_TIMEOUT):
                line = await reader.readline()
            if not line.strip():
                break
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    request, version = await _read_request(line, reader, writer)
            except BadRequest:
                writer.write(_render(Response(400, b"400 Bad Request"), keep_alive=False))
                break
            response = await handler(request)
            keep_alive = _keep_alive(version, request.headers)
            writer.write(_render(response, keep_alive))
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _read_request(
    line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[Request, str]:
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest()
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise BadRequest()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_body(reader, headers)
    path = unquote(urlsplit(target).path, errors="replace")
    return Request(method, path, headers, body), version


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BadRequest() from None
            if size == 0:
                while (await reader.readline()).strip():  # trailers
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                raise BadRequest()
            body += await reader.readexactly(size)
            await reader.readline()
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        raise BadRequest()
    return await reader.readexactly(int(length))


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


def _render(response: Response, keep_alive: bool) -> bytes:
    phrase = HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines.append(f"Date: {formatdate(usegmt=True)}")
    if response.status != 204:
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body

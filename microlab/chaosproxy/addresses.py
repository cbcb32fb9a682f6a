"""Listen addresses: parsing, resolving and binding them with Go's error messages.

Toxiproxy reports a listener by the address it actually bound (`localhost:0` comes back as
`127.0.0.1:41234`), and decides whether an update "changes the address" by resolving the new
value and comparing strings. Both rules are visible to clients, so they live here.

One deliberate difference: a wildcard host (`""`, `0.0.0.0`, `::`) binds to the server's own
API host (127.0.0.1 by default), so the sandbox never exposes proxies beyond loopback unless the
server itself was started on a public address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from dataclasses import dataclass

from .errors import listen_failed

WILDCARD_HOSTS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class AddressError(Exception):
    """Go's wording for a bad address, without the `listen tcp:` prefix that Listen adds."""


def split_host_port(text: str) -> tuple[str, str]:
    """Go's `net.SplitHostPort`."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"address {text}: missing ']' in address")
        host, rest = text[1:end], text[end + 1 :]
        if not rest.startswith(":"):
            raise AddressError(f"address {text}: missing port in address")
        return host, rest[1:]
    if ":" not in text:
        raise AddressError(f"address {text}: missing port in address")
    host, port = text.rsplit(":", 1)
    if ":" in host:
        raise AddressError(f"address {text}: too many colons in address")
    return host, port


def parse_port(port: str) -> int:
    if port == "":
        return 0
    if port.isdigit():
        if int(port) > 65535:
            raise AddressError(f"address {port}: invalid port")
        return int(port)
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise AddressError(f"lookup tcp/{port}: unknown port") from None


async def resolve(text: str) -> Address:
    """Go's `net.ResolveTCPAddr`: a hostname becomes its first IP (IPv4 preferred)."""
    if text == "":
        return Address("", 0)  # Go treats an empty address as ":0"
    host, port_text = split_host_port(text)
    port = parse_port(port_text)
    if host in WILDCARD_HOSTS:
        return Address(host, port)
    try:
        return Address(str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise AddressError(f"lookup {host}: no such host") from None
    ipv4 = [info for info in infos if info[0] == socket.AF_INET]
    return Address(str((ipv4 or infos)[0][4][0]), port)


async def resolved_listen(text: str) -> str:
    """The string an update compares with the stored listen address (errors become 500)."""
    try:
        return str(await resolve(text))
    except AddressError as error:
        raise listen_failed(str(error)) from None


async def bind(text: str, wildcard_host: str) -> socket.socket:
    """Open a listening socket for `text`, or raise the 500 Go's `net.Listen` would cause."""
    try:
        address = await resolve(text)
    except AddressError as error:
        raise listen_failed(f"listen tcp: {error}") from None
    if address.host in WILDCARD_HOSTS:
        address = Address(wildcard_host, address.port)
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        sock.listen(512)
    except OSError as error:
        sock.close()
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        raise listen_failed(f"listen tcp {address}: bind: {reason}") from None
    sock.setblocking(False)
    return sock


def bound_address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return str(Address(host, port))


def parse_upstream(text: str) -> tuple[str, int]:
    """Host and port to dial; upstreams are stored unchecked, so errors show up only here."""
    host, port = split_host_port(text)
    return host, parse_port(port)


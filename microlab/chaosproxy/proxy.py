"""A proxy: a name, a listen address, an upstream, its open connections and its toxics.

The rules here are the ones a client can observe in Toxiproxy:

- `listen` reports the address actually bound while the proxy is enabled (`localhost:0` →
  `127.0.0.1:41234`), and the last value given while it is disabled;
- disabling closes the listener (new connects are refused) and every open connection;
- an update that changes the address (compared after resolving the new listen) or the upstream
  restarts the proxy, dropping its connections; toxics survive all of this;
- toxics are applied to open connections at once, not only to new ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any

from .addresses import bind, bound_address, resolved_listen
from .connection import Connection
from .errors import TOXIC_NOT_FOUND
from .gojson import Float32
from .metrics import ProxyMetrics
from .toxics import DIRECTIONS, Toxic

if TYPE_CHECKING:
    from .link import Link

log = logging.getLogger(__name__)


class Proxy:
    def __init__(
        self, name: str, listen: str, upstream: str, *, wildcard_host: str, rng: random.Random,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: dict[str, list[Toxic]] = {direction: [] for direction in DIRECTIONS}
        self._wildcard_host = wildcard_host
        self._rng = rng
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "Logger": {},  # an untagged Go struct field that the real server leaks; kept for byte-equality
            "toxics": [toxic.to_json() for toxic in self.all_toxics()],
        }

    # Listening

    async def start(self) -> None:
        """Listen (no-op if already enabled); raises ApiError(500) with Go's message on failure."""
        if self.enabled:
            return
        sock = await bind(self.listen, self._wildcard_host)
        self._server = await asyncio.get_running_loop().create_server(self._accept, sock=sock)
        self.listen = bound_address(sock)
        self.enabled = True
        log.info("Started proxy %s on %s, upstream %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        """Stop listening and close every open connection, dropping data held by toxics."""
        if not self.enabled:
            return
        self.enabled = False
        if self._server:
            self._server.close()
            self._server = None
        for connection in list(self._connections):
            connection.close()
        log.info("Terminated proxy %s", self.name)

    async def differs(self, listen: str, upstream: str) -> bool:
        """Would these settings need a restart? Raises ApiError(500) for an unresolvable listen."""
        return await resolved_listen(listen) != self.listen or upstream != self.upstream

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        if await self.differs(listen, upstream):
            await self.stop()
            self.listen, self.upstream = listen, upstream
        if enabled and not self.enabled:
            await self.start()
        elif not enabled:
            await self.stop()

    def _accept(self) -> asyncio.Protocol:
        connection = Connection(self.upstream, self.toxics, self._rng, self._connections.discard,
                                self._metrics, (self.name, self.listen))
        self._connections.add(connection)
        return connection.client

    # Toxics

    def all_toxics(self) -> list[Toxic]:
        """Upstream toxics first, then downstream, each in the order they were added."""
        return [toxic for direction in DIRECTIONS for toxic in self.toxics[direction]]

    def find_toxic(self, name: str) -> Toxic | None:
        return next((toxic for toxic in self.all_toxics() if toxic.name == name), None)

    def get_toxic(self, name: str) -> Toxic:
        toxic = self.find_toxic(name)
        if toxic is None:
            raise TOXIC_NOT_FOUND
        return toxic

    def _live_links(self, direction: str) -> list[Link]:
        return [c.links[direction] for c in self._connections if c.links]

    async def add_toxic(self, toxic: Toxic) -> None:
        self.toxics[toxic.direction].append(toxic)
        await asyncio.gather(*(link.add(toxic) for link in self._live_links(toxic.direction)))

    async def update_toxic(
        self, toxic: Toxic, attributes: dict[str, int], toxicity: Float32 | None
    ) -> None:
        toxic.attributes.update(attributes)
        if toxicity is not None:
            toxic.toxicity = toxicity
        await asyncio.gather(*(link.update(toxic) for link in self._live_links(toxic.direction)))

    async def remove_toxic(self, toxic: Toxic) -> None:
        self.toxics[toxic.direction].remove(toxic)
        await asyncio.gather(*(link.remove(toxic) for link in self._live_links(toxic.direction)))

    async def remove_all_toxics(self) -> None:
        for toxic in self.all_toxics():
            await self.remove_toxic(toxic)

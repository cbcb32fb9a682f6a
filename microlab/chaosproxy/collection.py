"""All the proxies of one server, and the operations that span them: create, delete, populate,
reset. Names are unique; a name is checked before any port is touched."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import PROXY_EXISTS, PROXY_NOT_FOUND, ApiError, missing_field
from .metrics import ProxyMetrics
from .proxy import Proxy


@dataclass(frozen=True)
class ProxySpec:
    """A proxy as described in a create or populate request."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True


class ProxyCollection:
    def __init__(self, wildcard_host: str, rng: random.Random,
                 metrics: ProxyMetrics | None = None) -> None:
        self._proxies: dict[str, Proxy] = {}
        self.metrics = metrics  # counted only when the server runs with -proxy-metrics
        self._wildcard_host = wildcard_host
        self._rng = rng

    def sorted(self) -> list[Proxy]:
        return [self._proxies[name] for name in sorted(self._proxies)]

    def get(self, name: str) -> Proxy:
        try:
            return self._proxies[name]
        except KeyError:
            raise PROXY_NOT_FOUND from None

    def _new(self, spec: ProxySpec) -> Proxy:
        return Proxy(
            spec.name, spec.listen, spec.upstream, wildcard_host=self._wildcard_host, rng=self._rng,
            metrics=self.metrics,
        )

    async def create(self, spec: ProxySpec) -> Proxy:
        if spec.name in self._proxies:
            raise PROXY_EXISTS
        proxy = self._new(spec)
        if spec.enabled:
            await proxy.start()  # on failure the proxy is not added
        self._proxies[spec.name] = proxy
        return proxy

    async def delete(self, name: str) -> None:
        await self.get(name).stop()
        del self._proxies[name]

    async def populate(self, specs: list[ProxySpec]) -> tuple[list[Proxy], ApiError | None]:
        """Add or replace each proxy, in order; stop at the first error.

        Returns the proxies now in effect and the error, if any. Every spec is validated before
        anything changes; after that, proxies handled before a failure stay as they are.
        """
        for number, spec in enumerate(specs, start=1):
            if not spec.name:
                return [], missing_field(f"name at proxy {number}")
            if not spec.upstream:
                return [], missing_field(f"upstream at proxy {number}")
        populated: list[Proxy] = []
        for spec in specs:
            try:
                populated.append(await self._add_or_replace(spec))
            except ApiError as error:
                return populated, error
        return populated, None

    async def _add_or_replace(self, spec: ProxySpec) -> Proxy:
        existing = self._proxies.get(spec.name)
        if existing:
            # Same address and upstream: keep it as it is, toxics, connections and enabled state.
            if not await existing.differs(spec.listen, spec.upstream):
                return existing
            await existing.stop()
        proxy = self._new(spec)
        if spec.enabled:
            await proxy.start()  # on failure the old proxy stays in place, stopped (as in Go)
        self._proxies[spec.name] = proxy
        return proxy

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic; open connections stay open."""
        for proxy in list(self._proxies.values()):
            await proxy.start()
            await proxy.remove_all_toxics()

    async def close(self) -> None:
        for proxy in self._proxies.values():
            await proxy.stop()
        self._proxies.clear()

"""Running the chaos proxy: as a program (`python -m microlab.chaosproxy`) or inside another
Python process (tests, notebooks) with `ChaosProxyServer`, which runs its own event loop in a
background thread:

    with ChaosProxyServer(port=0) as chaos:      # port 0: any free port
        requests.post(f"{chaos.url}/proxies", json={...})
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from pathlib import Path

from .addresses import WILDCARD_HOSTS
from .api import Api, decode_populate
from .collection import ProxyCollection
from .errors import ApiError
from .http11 import serve_connection
from .metrics import ProxyMetrics

log = logging.getLogger(__name__)


class ChaosApp:
    """The server on the current event loop: the HTTP API and every proxy it manages."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, seed: int | None = None,
                 proxy_metrics: bool = False) -> None:
        self.host = host
        self.port = port
        # A wildcard proxy listen ("", 0.0.0.0) binds where the API does: loopback by default.
        wildcard_host = "0.0.0.0" if host in WILDCARD_HOSTS else host
        self.proxies = ProxyCollection(wildcard_host, random.Random(seed),
                                       ProxyMetrics() if proxy_metrics else None)
        self.api = Api(self.proxies)
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("Chaos proxy API listening on http://%s:%s", self.host, self.port)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            await serve_connection(reader, writer, self.api.handle)
        finally:
            del self._clients[task]

    async def populate_from(self, path: Path) -> None:
        """Load proxies from a JSON file at start-up, like Go's `-config`; errors are only logged."""
        try:
            specs = decode_populate(path.read_bytes())
            proxies, error = await self.proxies.populate(specs)
        except (OSError, ApiError) as failure:
            log.error("Failed to populate proxies from %s: %s", path, failure)
            return
        if error:
            log.error("Failed to populate proxies from %s: %s", path, error.message)
        else:
            log.info("Populated %d proxies from %s", len(proxies), path)

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for writer in self._clients.values():
            writer.close()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=1.0)
        await self.proxies.close()


class ChaosProxyServer:
    """A chaos proxy server running in a background thread of this process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8474,
        *,
        seed: int | None = None,
        config: str | Path | None = None,
        proxy_metrics: bool = False,
    ) -> None:
        self._app = ChaosApp(host, port, seed, proxy_metrics)
        self._config = Path(config) if config else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def host(self) -> str:
        return self._app.host

    @property
    def port(self) -> int:
        return self._app.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ChaosProxyServer:
        """Start serving; returns once the API is listening (raises if it cannot)."""
        self._thread = threading.Thread(target=self._run, name="chaosproxy", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error:
            self._thread.join()
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close the API, every proxy and every connection, and end the thread."""
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self) -> ChaosProxyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._app.start())
            if self._config:
                loop.run_until_complete(self._app.populate_from(self._config))
        except BaseException as error:  # reported to the thread that called start()
            self._startup_error = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        await self._app.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve(
    host: str, port: int, *, seed: int | None = None, config: Path | None = None,
    proxy_metrics: bool = False,
) -> None:
    """Run the server on the current loop until cancelled (the CLI's main)."""
    app = ChaosApp(host, port, seed, proxy_metrics)
    await app.start()
    if config:
        await app.populate_from(config)
    try:
        await asyncio.Event().wait()
    finally:
        await app.close()

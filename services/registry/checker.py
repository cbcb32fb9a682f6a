"""The registry's own health checking: a background thread that keeps the catalog honest.

Every `tick` seconds (0.5 by default) it asks the catalog to expire overdue TTL checks and reap
services critical for too long (`Catalog.sweep`), then sends each due HTTP check's request from a
small pool of threads, so one slow target cannot delay the others. Each request has its own
timeout (the check's `Timeout`, 5 s by default) and never follows a proxy from the environment.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

from services.registry.domain import Catalog, CheckStatus, HttpProbe, status_for_http_code

log = logging.getLogger("registry.checker")

MAX_BODY = 4096  # characters of a probed body kept as the check's output


class HealthChecker:
    def __init__(self, catalog: Catalog, *, tick: float = 0.5, workers: int = 4,
                 session: requests.Session | None = None) -> None:
        self.catalog = catalog
        self.tick = tick
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registry-probe")
        self._session = session or _probe_session(workers)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-checker", daemon=True)

    def start(self) -> HealthChecker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def assert_running(self) -> None:
        """The registry's /health check: answers 503 if health checking has stopped."""
        if not self._thread.is_alive():
            raise RuntimeError("the health checker thread is not running")

    def run_once(self) -> None:
        """One round: sweep, then send out the HTTP checks that are due."""
        for service_id in self.catalog.sweep():
            log.info("deregistered a service critical for too long",
                     extra={"service_id": service_id})
        for probe in self.catalog.due_http_checks():
            self._pool.submit(self.probe, probe)

    def probe(self, probe: HttpProbe) -> None:
        """Send one HTTP check's request and record what it says about the target."""
        try:
            response = self._session.request(
                probe.method, probe.url, headers={k: ", ".join(v) for k, v in probe.header.items()},
                timeout=probe.timeout)
            status = status_for_http_code(response.status_code)
            output = (f"HTTP {probe.method} {probe.url}: {response.status_code} "
                      f"{response.reason} Output: {response.text[:MAX_BODY]}")
        except requests.RequestException as error:
            status = CheckStatus.CRITICAL
            output = f"HTTP {probe.method} {probe.url}: {type(error).__name__}: {error}"
        except Exception as error:  # a probe must always report, or its check stops being run
            log.exception("HTTP check failed unexpectedly", extra={"check_id": probe.check_id})
            status = CheckStatus.CRITICAL
            output = f"HTTP {probe.method} {probe.url}: {type(error).__name__}"
        self.catalog.record_probe(probe.check_id, status, output)

    def _run(self) -> None:
        while not self._stopped.wait(self.tick):
            try:
                self.run_once()
            except Exception:  # keep checking: one bad round must not end health checking
                log.exception("health check round failed")


def _probe_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # targets are addressed directly; no proxies from the env
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session

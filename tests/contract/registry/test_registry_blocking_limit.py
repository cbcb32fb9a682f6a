"""Our registry only (not part of Consul's contract): blocking queries cannot take every thread."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from patterns.settings import ServiceSettings
from services.registry.app import SPARE_THREADS, create_app


def test_blocking_queries_beyond_the_limit_are_answered_429_at_once():
    app = create_app(ServiceSettings(name="registry", port=0, threads=SPARE_THREADS + 1))
    try:
        index = app.test_client().get("/v1/catalog/services").headers["X-Consul-Index"]
        blocking = f"/v1/catalog/services?index={index}&wait=20s"
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(app.test_client().get, blocking)  # takes the only slot
            time.sleep(1.0)

            started = time.monotonic()
            refused = app.test_client().get(blocking)
            assert refused.status_code == 429 and time.monotonic() - started < 2
            assert b"Too many blocking queries" in refused.data

            app.test_client().put("/v1/agent/service/register", json={"Name": "wake-up"})
            answered = waiting.result(timeout=10)
        assert answered.status_code == 200 and "wake-up" in answered.get_json()
        assert int(answered.headers["X-Consul-Index"]) > int(index)
    finally:
        app.extensions["registry.checker"].stop()

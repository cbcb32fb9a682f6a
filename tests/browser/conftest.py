"""The dashboard in a real browser: Playwright driving Debian's Chromium, headless.

The dashboard server runs in this process (on a free port) against the session's sandbox (the
`sandbox` fixture of tests/conftest.py, shared with the integration tests). Playwright's own
browser download cannot work here, so the tests use the system's Chromium
(`apt-get install -y chromium`; CHROMIUM=/path/to/chromium to use another).

Screenshots go to reports/browser/ (not committed). Every page records its console errors and
uncaught exceptions in `page.problems`, so a test can assert there were none.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import make_server

from microlab.chaos import ChaosClient
from microlab.dashboard.app import create_app, socket_io_client
from microlab.dashboard.sandbox import Sandbox
from microlab.launcher import SandboxProcess
from microlab.lab import sandbox_env
from microlab.processes import ROOT
from microlab.topology import load_topology
from tests.helpers import missing

SCREENSHOTS = ROOT / "reports" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and later tests that call asyncio.run() must not find one.
@pytest.fixture(scope="module")
def dashboard_url(sandbox: SandboxProcess) -> Iterator[str]:
    client = socket_io_client()
    if client is None or not client.exists():
        pytest.fail("the Socket.IO client is not built: run `make dashboard-assets` first")
    environ = {**os.environ, **sandbox_env(sandbox.state, sandbox.run_dir.path)}
    seen = Sandbox(environ)
    server = make_server("127.0.0.1", 0, create_app(seen), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        seen.close()
        ChaosClient(sandbox.urls["chaos"], load_topology()).reset()  # leave the edges as found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, dashboard_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=dashboard_url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.problems = problems  # type: ignore[attr-defined]
    yield page
    context.close()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

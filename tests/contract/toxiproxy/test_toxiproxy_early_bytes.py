"""Bytes a client sends the moment it connects come back whole (CPython gh-103607).

Clients often write as soon as `connect()` returns: an HTTP request, a MongoDB handshake.
Those bytes reach the proxy while it is still dialling the upstream. Toxiproxy reads them once
the upstream answers; so must we. On Python 3.11.0–3.11.3 asyncio ignores the pause the proxy
makes while it dials, and the proxy used to read those bytes and drop them, so nothing came
back at all. Debian 12's `/usr/bin/python3` is 3.11.2, and so are our container images.

- `test_bytes_sent_on_connect_come_back` runs against the suite's server (ours on this
  Python, or a real Toxiproxy with TOXIPROXY_URL).
- `test_bytes_sent_on_connect_come_back_on_system_python` starts our server under
  `/usr/bin/python3`, with only the standard library (`-S`, PYTHONPATH = this repository), and
  is skipped when that interpreter is missing or already has the fix (3.11.4 and later).
The same failure, simulated at the protocol level on any Python, is in
`test_toxiproxy_early_bytes_protocol.py`.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import EchoServer, connect

REPO = Path(__file__).resolve().parents[3]
SYSTEM_PYTHON = Path("/usr/bin/python3")
FIXED_IN = (3, 11, 4)  # CPython gh-103607: pause_reading() in connection_made() is honoured
SIZES = [1, 1000, 64 * 1024 + 1, 300_000]  # one segment, one read, two reads, many reads
CONNECTIONS = 4  # per size, all at once


def payload_of(size: int) -> bytes:
    """Bytes whose order is visible: a running counter, so a lost or swapped piece shows."""
    return b"".join(n.to_bytes(4, "big") for n in range(size // 4 + 1))[:size]


def send_on_connect(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    """Connect, write `payload` at once (from another thread), return what comes back in time."""
    with connect(port, timeout=timeout) as client:

        def send() -> None:
            try:
                client.sendall(payload)
            except OSError:
                pass  # the reader below reports what is missing

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        try:
            while len(received) < len(payload) and (chunk := client.recv(65536)):
                received += chunk
        except OSError:
            pass
        sender.join()
    return bytes(received)


def check_echoed(port: int) -> None:
    """Several connections per payload size, opened together, each sending on connect."""
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        for size in SIZES:
            payload = payload_of(size)
            replies = list(pool.map(lambda _: send_on_connect(port, payload), range(CONNECTIONS)))
            got = [len(reply) for reply in replies]
            assert all(reply == payload for reply in replies), (
                f"sent {size} bytes on each of {CONNECTIONS} connections, got back {got}")


def create_echo_proxies(api: ToxiproxyApi, echo: EchoServer) -> dict[str, int]:
    """A plain proxy (the fast path) and one with a toxic stage on each direction."""
    plain = listen_port(api.create_proxy("early_plain", echo.address))
    toxic = listen_port(api.create_proxy("early_toxic", echo.address))
    api.add_toxic("early_toxic", "latency", stream="upstream", latency=5)
    api.add_toxic("early_toxic", "slicer", stream="downstream", average_size=1000,
                  size_variation=100)
    return {"plain": plain, "toxic": toxic}


def test_bytes_sent_on_connect_come_back(api: ToxiproxyApi, echo: EchoServer) -> None:
    for port in create_echo_proxies(api, echo).values():
        check_echoed(port)


# Under /usr/bin/python3


def system_python_version() -> tuple[int, int, int]:
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} is not installed")
    out = subprocess.run([SYSTEM_PYTHON, "-S", "-c", "import sys; print(*sys.version_info[:3])"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    major, minor, micro = map(int, out.split())
    if (major, minor) < (3, 11):
        pytest.skip(f"{SYSTEM_PYTHON} is {major}.{minor}.{micro}; the proxy needs Python 3.11")
    return major, minor, micro


def stdlib_only_env() -> dict[str, str]:
    """This environment without virtualenv or PYTHON* settings, importing from the repo only."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PYTHON") and key != "VIRTUAL_ENV"}
    return {**env, "PYTHONPATH": str(REPO), "LOG_LEVEL": "info"}


def test_chaosproxy_needs_only_the_standard_library() -> None:
    """So that `/usr/bin/python3 -S -m microlab.chaosproxy` works with no packages installed."""
    system_python_version()
    script = ("import sys, microlab.chaosproxy\n"
              "print(*sorted({m.split('.')[0] for m in sys.modules} - {'__main__'}"
              " - set(sys.stdlib_module_names)))")
    result = subprocess.run([SYSTEM_PYTHON, "-S", "-c", script], cwd=REPO, env=stdlib_only_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["microlab"], f"imports beyond the stdlib: {result.stdout}"


@pytest.fixture(scope="module")
def system_python_api() -> Iterator[ToxiproxyApi]:
    """Our server under /usr/bin/python3 (skipped unless that Python has gh-103607)."""
    version = system_python_version()
    if version >= FIXED_IN:
        pytest.skip(f"{SYSTEM_PYTHON} is {'.'.join(map(str, version))}: gh-103607 is fixed "
                    "there (3.11.4), nothing to reproduce")
    process = subprocess.Popen(
        [SYSTEM_PYTHON, "-S", "-m", "microlab.chaosproxy", "-host", "127.0.0.1", "-port", "0"],
        cwd=REPO, env=stdlib_only_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def drain() -> None:  # keep reading, or the server blocks on a full pipe of log lines
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)
        lines.put("")

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    try:
        url = None
        while url is None:
            try:
                line = lines.get(timeout=15)
            except queue.Empty:
                break
            if not line:
                break
            if match := re.search(r"API listening on (http://\S+)", line):
                url = match.group(1)
        if url is None:
            pytest.fail(f"{SYSTEM_PYTHON} did not start the proxy:\n{''.join(output)}")
        client = ToxiproxyApi(url)
        yield client
        client.session.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        drainer.join(5)
        assert process.stdout is not None
        process.stdout.close()


def test_bytes_sent_on_connect_come_back_on_system_python(
        system_python_api: ToxiproxyApi, echo: EchoServer) -> None:
    assert system_python_api.get("/version").ok
    for port in create_echo_proxies(system_python_api, echo).values():
        check_echoed(port)

"""The supervisor's control API, on loopback only.

    GET  /status                      every process: pid, port, state, health, uptime, memory
    POST /services/<name>/stop        stop one process (the rest keep answering)
    POST /services/<name>/start       start it again and wait until it is healthy
    POST /services/<name>/restart     both

<name> is a service of the topology or a piece of infrastructure the supervisor runs (`mongo`,
`chaos`).

`microlab status|stop|start|restart`, the tests and the notebooks use it. Lifecycle commands run
on the supervisor's main thread; this server only carries them there and back.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Supervised(Protocol):
    """What the control API needs of the supervisor (which builds this server, so this module
    does not import it back)."""

    def status(self) -> dict: ...
    def submit(self, command: Callable[[], Any], timeout: float = ...) -> Any: ...
    def stop_service(self, name: str) -> dict: ...
    def start_service(self, name: str) -> dict: ...
    def restart_service(self, name: str) -> dict: ...
    def wiring(self, name: str) -> dict[str, str]: ...


_ACTION = re.compile(r"^/services/([a-z_]+)/(stop|start|restart)$")
_WIRING = re.compile(r"^/services/([a-z_]+)/wiring$")


class _Handler(BaseHTTPRequestHandler):
    supervisor: Supervised

    def do_GET(self) -> None:
        wiring = _WIRING.match(self.path)
        if self.path == "/status":
            self._reply(200, self.supervisor.status())
        elif wiring:
            try:
                self._reply(200, self.supervisor.wiring(wiring.group(1)))
            except KeyError as error:
                self._reply(404, {"error": error.args[0]})
        else:
            self._reply(404, {"error": f"no route GET {self.path}"})

    def do_POST(self) -> None:
        match = _ACTION.match(self.path)
        if not match:
            self._reply(404, {"error": f"no route POST {self.path}"})
            return
        name, action = match.groups()
        supervisor = self.supervisor
        command = {"stop": supervisor.stop_service, "start": supervisor.start_service,
                   "restart": supervisor.restart_service}[action]
        try:
            self._reply(200, supervisor.submit(lambda: command(name)))
        except KeyError as error:
            self._reply(404, {"error": error.args[0]})
        except Exception as error:  # a failed start, a stopping sandbox: say what happened
            self._reply(409, {"error": str(error)})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the supervisor's terminal is for the services' logs


class ControlServer:
    def __init__(self, supervisor: Supervised, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"supervisor": supervisor})
        self.server = ThreadingHTTPServer((host, port), handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.server.allow_reuse_address = True
        self.server.server_bind()
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, name="control",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread:
            self.server.shutdown()
            self.thread = None
        self.server.server_close()

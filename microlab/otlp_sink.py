"""A stand-in for Jaeger's OTLP/HTTP collector where its image cannot be had: it takes what
the services export (`POST /v1/traces`), answers 200 and counts the requests; `GET /health`.

    PORT=4318 python -m microlab.otlp_sink
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Collector(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Collector.received += 1
        self._answer(200, b"{}")

    def do_GET(self) -> None:
        self._answer(200, f'{{"exports": {Collector.received}}}'.encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per export would drown the stack's logs


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "4318"))), Collector).serve_forever()

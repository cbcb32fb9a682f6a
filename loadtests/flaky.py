"""A tiny flaky HTTP service for the retries scenario: fails a fixed share of requests, counts
every attempt.

    python -m loadtests.flaky --failure-rate 0.3 --seed 42
    # prints "listening on http://127.0.0.1:PORT", then serves until killed

`GET /work/<policy>` answers 200, or 503 with probability `failure-rate` (a seeded rng, so runs
are repeatable). Clients send one `X-Request-Id` per request, the same on each of its attempts;
`GET /stats` returns {policy: {"requests": n, "attempts": n, "failures": n}}: the server's view
of how many requests each client policy made and how many attempts they took. Loopback only,
a free port.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
from collections import Counter, defaultdict

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class Flaky:
    def __init__(self, failure_rate: float, seed: int) -> None:
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.request_ids: dict[str, set[str]] = defaultdict(set)
        self.attempts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response) -> object:
        request = Request(environ)
        if request.path == "/stats":
            return _json(self.stats(), 200)(environ, start_response)
        policy = request.path.removeprefix("/work/")
        with self.lock:
            failed = self.rng.random() < self.failure_rate
            self.request_ids[policy].add(request.headers.get("X-Request-Id", ""))
            self.attempts[policy] += 1
            self.failures[policy] += failed
        body = {"error": {"code": "flaky"}} if failed else {"ok": True}
        return _json(body, 503 if failed else 200)(environ, start_response)

    def stats(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {policy: {"requests": len(self.request_ids[policy]), "attempts": count,
                             "failures": self.failures[policy]}
                    for policy, count in self.attempts.items()}


def _json(body: object, status: int) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--failure-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    server = make_server("127.0.0.1", 0, Flaky(args.failure_rate, args.seed), threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

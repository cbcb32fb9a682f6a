"""Command line: `python -m microlab.chaosproxy [-host H] [-port P] [-config FILE] [-seed N]
[-proxy-metrics]`.

Flags follow `toxiproxy-server` (single dash, `-port=8474` works too); the `--host` style is
accepted as well. The API binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from .api import VERSION
from .server import serve

# Toxiproxy's LOG_LEVEL names (zerolog) mapped to Python's logging levels.
LOG_LEVELS = {"trace": "DEBUG", "debug": "DEBUG", "info": "INFO", "warn": "WARNING",
              "error": "ERROR", "fatal": "CRITICAL", "panic": "CRITICAL"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m microlab.chaosproxy",
        description="Toxiproxy-compatible chaos proxy (HTTP API + TCP proxies).",
    )
    parser.add_argument("-host", "--host", default="127.0.0.1", help="API host (default 127.0.0.1)")
    parser.add_argument("-port", "--port", type=int, default=8474, help="API port (default 8474)")
    parser.add_argument("-config", "--config", type=Path, help="JSON file of proxies to load at start")
    parser.add_argument("-seed", "--seed", type=int, help="seed for toxicity and jitter draws")
    parser.add_argument("-proxy-metrics", "--proxy-metrics", action="store_true",
                        help="serve per-proxy byte counters at GET /metrics (Prometheus text)")
    parser.add_argument("-version", "--version", action="store_true", help="print the version")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.version:
        print(f"toxiproxy-server version {VERSION}")
        return
    logging.basicConfig(
        level=LOG_LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    try:
        asyncio.run(serve(args.host, args.port, seed=args.seed, config=args.config,
                          proxy_metrics=args.proxy_metrics))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""`python -m microlab.dashboard [--host H] [--port P]`: the control room of a running sandbox."""

from __future__ import annotations

import argparse
import logging
import sys

from werkzeug.serving import make_server

from microlab.dashboard.app import create_app

DEFAULT_PORT = 8488


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.dashboard",
                                     description="A live web page of the running sandbox.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on ({DEFAULT_PORT}; 0 picks a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per poll
    try:
        server = make_server(args.host, args.port, create_app(), threaded=True)
    except OSError as error:
        print(f"dashboard: cannot listen on {args.host}:{args.port} ({error.strerror}); "
              f"`make up` already serves one there, or pick another with --port", file=sys.stderr)
        return 1
    print(f"dashboard: http://{args.host}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

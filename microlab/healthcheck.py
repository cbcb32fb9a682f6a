"""A container's health check, so the image needs no curl.

    python -m microlab.healthcheck                          # http://127.0.0.1:$PORT/health
    python -m microlab.healthcheck http://127.0.0.1:8474/version
    python -m microlab.healthcheck mongodb://127.0.0.1:27017/

Exit 0 when the URL answers 200 (or, for mongodb://, a ping). A 503 (a dependency of the
service is down) is unhealthy: compose then waits before starting what depends on it.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def healthy(url: str) -> bool:
    if url.startswith("mongodb://"):
        import pymongo
        from pymongo.errors import PyMongoError
        try:
            pymongo.MongoClient(url, serverSelectionTimeoutMS=2000).admin.command("ping")
            return True
        except PyMongoError as error:
            print(f"{url}: {error}", file=sys.stderr)
            return False
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return False


def main(argv: list[str]) -> int:
    url = argv[0] if argv else f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health"
    return 0 if healthy(url) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

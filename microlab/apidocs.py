"""The API reference of the lesson site: every service's OpenAPI document, rendered offline.

    python -m microlab.apidocs lessons/api

writes into the folder, for every service that documents its API, `<service>.json` (its
/openapi.json) and `<service>.html` (the document rendered by Swagger UI), plus `index.md` (a
page linking them, for MkDocs) and `swagger-ui/` (the renderer's files). The gateway's page is
the whole shop: its /openapi.json gathers every route it forwards under its public path.

Where the documents come from: each service is built in this process by its own
`create_app(settings)`, the way the service tests build it, against an embedded MongoDB started
for the occasion and the RabbitMQ at AMQP_URL under a throw-away namespace (consumers declare
their queues as the app is built; the namespace is deleted afterwards). Nothing else runs: no
sandbox, no network beyond loopback. Each upstream is served on a loopback port so that the
gateway fetches the documents over HTTP exactly as it does in the sandbox; a document the
gateway could not gather fails the build instead of publishing a partial reference.

Where the renderer comes from: `swagger-ui-dist`, pinned below with its npm integrity hash,
fetched once with `npm pack` into build/vendor/ (ignored by git) and checked against that hash.
The pages load only the copied files and embed their document: nothing is fetched when a page
is read (Swagger UI's online validator badge is turned off, and so is "Try it out": the pages
are a reference; call the running sandbox with curl or a notebook).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import html
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from flask import Flask
from werkzeug.serving import make_server

from microlab.embedded_mongo import running_mongo
from microlab.preflight import PreflightError, check_rabbitmq
from microlab.rabbit import delete_namespace
from microlab.topology import DEFAULT_AMQP_URL, LOOPBACK, Topology, load_topology
from patterns.settings import ServiceSettings

RENDERER = "swagger-ui-dist"
RENDERER_VERSION = "5.35.0"
RENDERER_INTEGRITY = ("sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn"
                      "/h0wCDNsXdGarTNNHC3sU8yVUQ==")
RENDERER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE")
VENDOR_DIR = Path(__file__).resolve().parent.parent / "build" / "vendor"
GATEWAY = "gateway"
# Peers are never called while a document is built; an address nobody answers on will do.
UNUSED_PEER = f"http://{LOOPBACK}:9"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} API · Microservices Lab</title>
<link rel="stylesheet" href="swagger-ui/swagger-ui.css">
</head>
<body>
<p style="font-family: sans-serif; margin: 1em 2em"><a href="index.html">All services</a> ·
<a href="{name}.json">{name}.json</a></p>
<div id="api"></div>
<script src="swagger-ui/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({{spec: {spec}, dom_id: "#api", deepLinking: true,
                  validatorUrl: null, supportedSubmitMethods: []}});
</script>
</body>
</html>
"""


class ApiDocsError(Exception):
    """The reference cannot be built; the message says why and what to do."""


# -- the renderer ------------------------------------------------------------------------------


def vendored_renderer(vendor_dir: Path = VENDOR_DIR) -> Path:
    """The folder holding the pinned Swagger UI files, fetched with npm the first time."""
    target = vendor_dir / f"{RENDERER}-{RENDERER_VERSION}"
    if all((target / name).is_file() for name in RENDERER_FILES):
        return target
    if shutil.which("npm") is None:
        raise ApiDocsError(f"npm is needed once to fetch {RENDERER}@{RENDERER_VERSION} "
                           "(apt-get install npm), then the copy in build/vendor/ is reused")
    vendor_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=vendor_dir) as download:
        packed = subprocess.run(
            ["npm", "pack", f"{RENDERER}@{RENDERER_VERSION}", "--pack-destination", download],
            capture_output=True, text=True, timeout=300)
        tarball = Path(download) / f"{RENDERER}-{RENDERER_VERSION}.tgz"
        if packed.returncode != 0 or not tarball.is_file():
            raise ApiDocsError(f"npm pack {RENDERER}@{RENDERER_VERSION} failed:\n"
                               + (packed.stderr.strip() or packed.stdout.strip())[-2000:])
        _check_integrity(tarball)
        staged = Path(download) / "files"
        staged.mkdir()
        with tarfile.open(tarball) as archive:
            for name in RENDERER_FILES:
                member = archive.extractfile(f"package/{name}")
                if member is None:
                    raise ApiDocsError(f"{tarball.name} has no {name}")
                (staged / name).write_bytes(member.read())
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    return target


def _check_integrity(tarball: Path) -> None:
    algorithm, _, expected = RENDERER_INTEGRITY.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise ApiDocsError(f"{tarball.name} does not match its pinned integrity hash "
                           f"({algorithm}-{digest}); refusing to use it")


# -- the documents -----------------------------------------------------------------------------


@contextlib.contextmanager
def _served(app: Flask) -> Iterator[str]:
    server = make_server(LOOPBACK, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def build_documents(topology: Topology, amqp_url: str) -> dict[str, dict]:
    """Every documented service's /openapi.json, the gateway's gathering all the others."""
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")  # no spans wanted from a docs build
    check_rabbitmq(amqp_url)
    namespace = f"apidocs-{uuid.uuid4().hex[:8]}"
    apps: dict[str, Flask] = {}
    with tempfile.TemporaryDirectory() as data, running_mongo(Path(data)) as mongo_url:
        try:
            def build(name: str, peers: dict[str, str]) -> Flask:
                create_app = importlib.import_module(
                    f"{topology.service(name).module}.app").create_app
                apps[name] = create_app(ServiceSettings(
                    name=name, port=0, mongo_url=mongo_url, mongo_db=f"apidocs_{name}",
                    amqp_url=amqp_url, bus_namespace=namespace, peers=peers))
                return apps[name]

            unused = {name: UNUSED_PEER for name in topology.services}
            documented = {}
            for name in topology.services:
                if name != GATEWAY:
                    app = build(name, unused)
                    if "openapi" in app.view_functions:  # the registry speaks Consul's API
                        documented[name] = app
            with contextlib.ExitStack() as stack:
                urls = {name: stack.enter_context(_served(app))
                        for name, app in documented.items()}
                gateway = build(GATEWAY, {**unused, **urls})
                documents = {name: _document(app) for name, app in documented.items()}
                documents[GATEWAY] = _document(gateway)
        finally:
            for app in apps.values():
                if "kit" in app.extensions:  # the registry has no background work to stop
                    app.extensions["kit"].stop()
            delete_namespace(amqp_url, namespace)
    missing = documents[GATEWAY].get("x-missing-upstreams")
    if missing:
        raise ApiDocsError(f"the gateway could not gather every document: {missing}")
    return documents


def _document(app: Flask) -> dict:
    answer = app.test_client().get("/openapi.json")
    if answer.status_code != 200:
        raise ApiDocsError(f"{app.name}'s /openapi.json answered {answer.status_code}")
    return answer.get_json()


# -- the pages ---------------------------------------------------------------------------------


def page(name: str, document: dict) -> str:
    """A standalone HTML page rendering one document; the document is embedded in it."""
    # "</" could end the <script> element early if a description contained "</script>".
    spec = json.dumps(document).replace("</", "<\\/")
    return PAGE.format(title=html.escape(document["info"]["title"]), name=name, spec=spec)


def index(documents: dict[str, dict], topology: Topology) -> str:
    """The Markdown page of the reference: the gateway first, then each service."""
    lines = [
        "# API reference", "",
        "Every service documents its HTTP API as OpenAPI 3 at `/openapi.json`, built from the",
        "same declarations that validate its requests (`patterns/api.py`). The gateway's",
        "document is the whole shop as a client sees it: every route it forwards, under its",
        "public `/api/...` path, with the token each needs and the answers the gateway adds",
        "(429, 502, 503, 504). These pages are a reference; to call the API, start the sandbox",
        "(`make up`) and use `curl` or a notebook.", "",
        "| service | what it does | document |", "|---|---|---|",
    ]
    for name in sorted(documents, key=lambda name: (name != GATEWAY, name)):
        description = "the whole shop, as clients call it" if name == GATEWAY \
            else topology.service(name).description
        lines.append(f"| [{name}]({name}.html) | {description} | [{name}.json]({name}.json) |")
    lines += ["", f"Rendered with {RENDERER} {RENDERER_VERSION} (Apache-2.0), copied beside "
              "these pages.", ""]
    return "\n".join(lines)


def write_reference(out_dir: Path, documents: dict[str, dict], topology: Topology,
                    renderer: Path) -> list[Path]:
    """Write the pages, documents and renderer into out_dir; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = out_dir / "swagger-ui"
    assets.mkdir(exist_ok=True)
    written = []
    for name in RENDERER_FILES:
        shutil.copyfile(renderer / name, assets / name)
        written.append(assets / name)
    for name, document in documents.items():
        (out_dir / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
        (out_dir / f"{name}.html").write_text(page(name, document))
        written += [out_dir / f"{name}.json", out_dir / f"{name}.html"]
    (out_dir / "index.md").write_text(index(documents, topology))
    written.append(out_dir / "index.md")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.apidocs", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the reference into")
    args = parser.parse_args(argv)
    # The services' routine log lines (and the loopback servers' access lines) are not news
    # during a docs build; their errors are.
    logging.basicConfig(level=logging.ERROR, format="apidocs: %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # preflight says it in one message
    topology = load_topology()
    try:
        renderer = vendored_renderer()
        documents = build_documents(topology, os.environ.get("AMQP_URL", DEFAULT_AMQP_URL))
    except (ApiDocsError, PreflightError) as error:
        print(f"apidocs: {error}", file=sys.stderr)
        return 2
    written = write_reference(args.out_dir, documents, topology, renderer)
    print(f"API reference: {len(documents)} services, {len(written)} files in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a service under gunicorn: one worker process, a pool of threads (gthread).

One worker keeps per-process state (circuit breakers, rate limits, Socket.IO rooms) in one
place; threads give concurrency for I/O-bound handlers. The app is built inside the worker,
after the fork, so connections and background threads (consumers, relays) are never shared
across a fork.

Under the sandbox's supervisor (MICROLAB_SUPERVISED=1, local mode) the same gunicorn worker runs
without its master: the master's one job, starting the worker again when it dies, is what the
supervisor's restart policy already does, and a master per service cost about 30 MB each.
In a container (compose, Kubernetes) the master stays: nothing else would restart a worker.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

# jsonschema imports every optional format checker it finds installed, and rfc3987-syntax (which
# Jupyter's jsonschema[format-nongpl] brings in) compiles a grammar when imported: a second of
# CPU in every service at start. Our schemas check no formats, so a service never loads it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]

from flask import Flask
from gunicorn import glogging, sock
from gunicorn.app.base import BaseApplication

from patterns.logs import configure_logging
from patterns.settings import ServiceSettings, SettingsError


def _logconfig(service: str) -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "patterns.logs.JsonFormatter", "service": service}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stdout"}},
        # gunicorn merges this over its defaults, which name these loggers too.
        "root": {"handlers": ["stdout"], "level": "INFO"},
        "loggers": {
            "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
        },
    }


class _NoAccessLog(glogging.Logger):
    """gunicorn's logger minus the access log: with a logging config given it formats an access
    line for every request (5 % of a service's CPU), only for the level to drop it. Our request
    logs and spans say more."""

    def access(self, *args: object, **kwargs: object) -> None:
        pass


class _Gunicorn(BaseApplication):
    def __init__(self, build_app: Callable[[], Flask], options: dict) -> None:
        self.build_app = build_app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.build_app()

    def run_worker(self) -> None:
        """gunicorn's own worker, in this process, with our parent as its master."""
        log = self.cfg.logger_class(self.cfg)
        worker = self.cfg.worker_class(1, os.getppid(), sock.create_sockets(self.cfg, log),
                                       self, self.cfg.timeout / 2.0, self.cfg, log)
        try:
            worker.init_process()  # serves until SIGTERM (or the parent is gone)
        except Exception:
            log.exception("Exception in worker process")  # the master's words for it
            sys.exit(1)


def bind_address(settings: ServiceSettings) -> str:
    """gunicorn's host:port for settings.host (an IPv6 address, such as ::, in brackets)."""
    host = settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{settings.port}"


def serve(build_app: Callable[[], Flask], settings: ServiceSettings) -> None:
    """Serve the app that `build_app()` returns on settings.host:settings.port until stopped."""
    server = _Gunicorn(build_app, {
        "bind": bind_address(settings),
        "workers": 1,
        "worker_class": "gthread",
        "threads": settings.threads,
        "graceful_timeout": 5,
        "timeout": 60,
        "accesslog": None,
        "logger_class": _NoAccessLog,
        "logconfig_dict": _logconfig(settings.name),
        "proc_name": f"microlab-{settings.name}",
        # Its default control socket is one path per user: every service would share it.
        "control_socket_disable": True,
    })
    if settings.supervised:
        server.run_worker()
    else:
        server.run()


# gunicorn's exit code for a worker that could not boot: its master stops (and says so) instead
# of starting the worker again and again.
WORKER_BOOT_ERROR = 3


def run_service(name: str, create_app: Callable[[ServiceSettings], Flask]) -> None:
    """What every `python -m services.<name>` does: settings from env, logging, serve. A
    malformed setting stops the service with one line naming it, never a traceback: read here
    (exit 2), or by `create_app` in the worker (its own knobs; exit 3, a boot error)."""
    configure_logging(name)

    def cannot_start(error: SettingsError, code: int) -> NoReturn:
        logging.getLogger(name).error(f"cannot start: {error}")
        sys.exit(code)

    try:
        settings = ServiceSettings.from_env(name)
    except SettingsError as error:
        cannot_start(error, 2)

    def build_app() -> Flask:
        try:
            return create_app(settings)
        except SettingsError as error:
            cannot_start(error, WORKER_BOOT_ERROR)

    serve(build_app, settings)

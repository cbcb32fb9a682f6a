"""The live side: a Socket.IO server where signed-in users receive their notifications.

Handshake: the client sends its JWT as `auth={"token": "<jwt>"}` (a browser that cannot may
add `?token=<jwt>` to the URL; proxies log URLs, so prefer `auth`). The token is verified like
a bearer token on a private route; a missing, forged or expired one refuses the connection
with a message saying why. The token is checked once, at the handshake: a socket stays
connected after its token expires, and the client reconnects with a fresh one when it must.

Rooms: a connected user joins `user:<id>`, and an admin also `admins`; a notification is
emitted as event `notification` to its recipient's room, so every tab of that user gets it.

Client events: `mark_read` `{"id": "ntf_…"}` is acknowledged with the updated notification,
or with `{"error": {"code", "message"}}` as the HTTP API would answer.

Capacity: served by gunicorn gthread, an open WebSocket holds one of the worker's threads (a
long-polling client holds one for each poll). Connections beyond `max_sockets` are refused,
so that threads stay free for the HTTP API and /health.

`async_mode="threading"` is set on purpose: with gevent installed (Locust brings it), the
server would otherwise pick gevent mode, which does not work under werkzeug or gthread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import socketio
from pymongo.errors import PyMongoError
from socketio import exceptions

from patterns.api import ApiError
from patterns.auth import TokenError, Tokens
from services.notifications.domain import rooms_of
from services.notifications.store import NotificationStore

log = logging.getLogger(__name__)

MAX_ID = 64  # characters of a notification id a client may send


def token_from(auth: Any, environ: Mapping[str, Any]) -> str | None:
    """The JWT of a handshake: `auth={"token": ...}` first, else the `token` query parameter."""
    if isinstance(auth, Mapping) and isinstance(auth.get("token"), str) and auth["token"]:
        return auth["token"]
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values and values[0] else None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class LiveNotifications:
    """The Socket.IO server: authenticated connections, rooms, pushes and `mark_read`."""

    def __init__(self, tokens: Tokens, store: NotificationStore, *, max_sockets: int) -> None:
        self.tokens = tokens
        self.store = store
        self.max_sockets = max_sockets
        # Tokens, not cookies, authenticate a socket: any origin may connect with one.
        self.server = socketio.Server(async_mode="threading", cors_allowed_origins="*")
        self.server.on("connect", self._connect)
        self.server.on("disconnect", self._disconnect)
        self.server.on("mark_read", self._mark_read)
        self._lock = threading.Lock()
        self._connected = 0

    @property
    def connected(self) -> int:
        """How many sockets are connected now."""
        return self._connected

    def push(self, room: str, notification: dict[str, Any]) -> None:
        """Send a notification to every socket in `room` (nobody there: nothing happens)."""
        self.server.emit("notification", notification, to=room)

    def serve_with(self, wsgi_app: Callable) -> socketio.WSGIApp:
        """A WSGI app answering /socket.io itself and everything else with `wsgi_app`."""
        return socketio.WSGIApp(self.server, wsgi_app)

    # -- Socket.IO handlers ----------------------------------------------------------------
    def _connect(self, sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        token = token_from(auth, environ)
        if token is None:
            raise exceptions.ConnectionRefusedError(
                'a token is required: connect with auth={"token": "<jwt>"}')
        try:
            claims = self.tokens.verify(token)
        except TokenError as error:
            raise exceptions.ConnectionRefusedError(f"invalid token: {error}") from None
        with self._lock:
            if self._connected >= self.max_sockets:
                log.warning("socket refused: server full", extra={"max_sockets": self.max_sockets})
                raise exceptions.ConnectionRefusedError(
                    f"the server is at its limit of {self.max_sockets} live connections; "
                    "retry later")
            self._connected += 1
        rooms = rooms_of(claims.subject, is_admin=claims.has_role("admin"))
        self.server.save_session(sid, {"user_id": claims.subject, "rooms": rooms})
        for room in rooms:
            self.server.enter_room(sid, room)
        log.info("socket connected", extra={"user_id": claims.subject, "rooms": rooms})

    def _disconnect(self, sid: str, reason: str | None = None) -> None:
        with self._lock:
            self._connected -= 1
        log.info("socket disconnected", extra={"reason": str(reason)})

    def _mark_read(self, sid: str, data: Any = None) -> dict[str, Any]:
        notification_id = data.get("id") if isinstance(data, Mapping) else None
        if not isinstance(notification_id, str) or not 0 < len(notification_id) <= MAX_ID:
            return _error("bad_request", 'send {"id": "<notification id>"}')
        rooms = self.server.get_session(sid)["rooms"]
        try:
            return self.store.mark_read(notification_id, rooms)
        except ApiError as error:
            return _error(error.code, error.message)
        except PyMongoError:
            log.exception("mark_read failed", extra={"notification_id": notification_id})
            return _error("unavailable", "notifications are unavailable; retry in a moment")

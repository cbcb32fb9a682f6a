"""The notifications service's app factory: every event becomes a notification, live or later.

- consumes every domain's events (`events.py`), stores one notification per event
  (`store.py`), pushes it over Socket.IO to the recipient's room (`sockets.py`);
- offline users read them later: `GET /api/v1/notifications` (mine, newest first,
  `unread=true`), `POST /api/v1/notifications/<id>/read`, `POST /api/v1/notifications/read-all`.

Socket.IO and the HTTP API share one WSGI app: `create_app` still returns the kit's Flask app,
whose `wsgi_app` is wrapped so that `/socket.io/` goes to the Socket.IO server and everything
else to Flask (the way Flask-SocketIO does it). gunicorn, werkzeug and `app.test_client()`
serve it unchanged, and `app.extensions["kit"]` stays where tests look for it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from patterns.api import PAGE_QUERY
from patterns.auth import Claims
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.notifications.domain import rooms_of
from services.notifications.events import BINDINGS, QUEUE, notify_on_event
from services.notifications.sockets import LiveNotifications
from services.notifications.store import NotificationStore

# Server threads a live socket may never take: kept for the HTTP API and /health.
SPARE_THREADS = 4

NOTIFICATION = {
    "type": "object",
    "required": ["id", "user_id", "type", "title", "message", "data", "read", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "user_id": {"type": ["string", "null"], "description": "null: for all admins"},
        "type": {"type": "string", "description": "the event's routing key"},
        "title": {"type": "string"},
        "message": {"type": "string"},
        "data": {"type": "object", "description": "the event's ids"},
        "read": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "read_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
NOTIFICATION_PAGE = {
    "type": "object",
    "required": ["items", "page", "limit", "total"],
    "properties": {"items": {"type": "array", "items": NOTIFICATION},
                   "page": {"type": "integer"}, "limit": {"type": "integer"},
                   "total": {"type": "integer"}},
}
LIST_QUERY = {**PAGE_QUERY, "unread": {"type": "boolean", "default": False,
                                       "description": "only the unread ones"}}


def reader_rooms(user: Claims) -> list[str]:
    return rooms_of(user.subject, is_admin=user.has_role("admin"))


def create_app(settings: ServiceSettings) -> Flask:
    kit = ServiceKit(settings, title="notifications",
                     description="Notifications of every event, pushed live over Socket.IO "
                                 "(/socket.io, JWT in the handshake) and kept for later.")
    store = NotificationStore(kit.collection("notifications"))
    live = LiveNotifications(kit.tokens, store,
                             max_sockets=max(1, settings.threads - SPARE_THREADS))
    kit.app.wsgi_app = live.serve_with(kit.app.wsgi_app)
    kit.app.extensions["notifications.live"] = live
    kit.consume(QUEUE, notify_on_event(store, live.push), *BINDINGS)

    @kit.api.get("/api/v1/notifications", query=LIST_QUERY, auth=True,
                 summary="My notifications, newest first", response=NOTIFICATION_PAGE)
    def list_notifications(query: dict[str, Any], user: Claims) -> dict[str, Any]:
        return store.page_for(reader_rooms(user), unread_only=query["unread"],
                              page=query["page"], limit=query["limit"])

    @kit.api.post("/api/v1/notifications/<notification_id>/read", auth=True,
                  summary="Mark one of my notifications read", response=NOTIFICATION)
    def mark_read(notification_id: str, user: Claims) -> dict[str, Any]:
        return store.mark_read(notification_id, reader_rooms(user))

    @kit.api.post("/api/v1/notifications/read-all", auth=True,
                  summary="Mark all my notifications read",
                  response={"type": "object", "required": ["updated"],
                            "properties": {"updated": {"type": "integer"}}})
    def mark_all_read(user: Claims) -> dict[str, int]:
        return {"updated": store.mark_all_read(reader_rooms(user))}

    kit.start()
    return kit.app

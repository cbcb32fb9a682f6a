"""One traced process of the tracing contract; every span it ends goes to TRACE_FILE.

    python traced_peer.py serve NAME [DOWNSTREAM_URL]  a service on a free 127.0.0.1 port; prints
        the port. GET /api/v1/hop answers, after calling DOWNSTREAM_URL + /api/v1/hop if given;
        GET /api/v1/hop?fail=1 makes the last service of the chain fail with a 500.
    python traced_peer.py consume AMQP_URL QUEUE  declares QUEUE (exclusive, auto-delete), prints
        `ready`, takes one message with basic_get (no pika instrumentation involved), handles it
        inside span_from_message, acks it, prints the message's headers as JSON and exits.
    python traced_peer.py publish AMQP_URL QUEUE  inside a span `place order`, publishes one
        message to QUEUE with inject_headers(); prints that span's trace id.
    python traced_peer.py relay AMQP_URL QUEUE  like publish, but as an outbox relay would: the
        headers are captured inside `place order`, the message is sent after that span ended,
        inside span_from_message(headers, "outbox relay", kind=PRODUCER).
    python traced_peer.py flood SPANS SIZE  ends SPANS spans carrying SIZE characters each.
"""

from __future__ import annotations

import json
import sys
import time

import pika
import requests
from flask import request
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from werkzeug.serving import make_server

from patterns.tracing import inject_headers, setup_tracing, span_from_message
from patterns.web import create_service_app


def serve(name: str, downstream: str | None) -> None:
    app = create_service_app(name)
    setup_tracing(name)
    setup_tracing(name, app)  # a second call only instruments the app: one server span each
    session = requests.Session()
    session.trust_env = False  # straight to 127.0.0.1, whatever proxy the environment names

    @app.get("/api/v1/hop")
    def hop() -> tuple[dict, int]:
        if downstream is None:
            if request.args.get("fail"):
                raise RuntimeError("the last hop fails on purpose")
            return {"served_by": [name]}, 200
        answer = session.get(f"{downstream}/api/v1/hop", params=request.args, timeout=10)
        if not answer.ok:
            return {"error": f"downstream answered {answer.status_code}"}, 502
        return {"served_by": [name, *answer.json()["served_by"]]}, 200

    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


def consume(amqp_url: str, queue: str) -> None:
    setup_tracing("warehouse")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(queue, exclusive=True, auto_delete=True)
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        method, properties, _ = channel.basic_get(queue)
        if method is None:
            connection.sleep(0.05)
            continue
        with span_from_message(properties.headers, "order.created process",
                               attributes={"messaging.message.id": properties.message_id}):
            channel.basic_ack(method.delivery_tag)
        print(json.dumps(properties.headers), flush=True)
        break
    connection.close()


def publish(amqp_url: str, queue: str, later: bool = False) -> None:
    setup_tracing("shop")
    tracer = trace.get_tracer("traced_peer")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()

    def send(headers: dict) -> None:
        channel.basic_publish("", queue, json.dumps({"order_id": "o-1"}).encode(),
                              pika.BasicProperties(message_id="m-1", headers=headers))

    with tracer.start_as_current_span("place order") as span:
        headers = inject_headers()
        if not later:
            send(headers)
    if later:
        with span_from_message(headers, "outbox relay", kind=SpanKind.PRODUCER):
            send(headers)
    connection.close()
    print(format(span.get_span_context().trace_id, "032x"), flush=True)


def flood(count: int, size: int) -> None:
    setup_tracing("flood")
    tracer = trace.get_tracer("traced_peer")
    for number in range(count):
        with tracer.start_as_current_span(f"span {number}", attributes={"filler": "x" * size}):
            pass


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "serve":
        serve(args[0], args[1] if len(args) > 1 else None)
    elif mode == "consume":
        consume(*args)
    elif mode in ("publish", "relay"):
        publish(*args, later=mode == "relay")
    elif mode == "flood":
        flood(int(args[0]), int(args[1]))
    else:
        sys.exit(f"unknown mode {mode!r}")

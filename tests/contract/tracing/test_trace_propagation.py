"""One trace across OS processes: over HTTP (two Flask services) and over AMQP (RabbitMQ).

Every process is a real, separate `traced_peer.py` that calls `setup_tracing` and appends its
spans to the one trace file of the test, as the services of the sandbox do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
import requests
from pika.exceptions import AMQPError

from patterns.tracing import SpanRecord, load_spans, waterfall

PEER = Path(__file__).with_name("traced_peer.py")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    return tmp_path / "traces.jsonl"


@pytest.fixture
def start_peer(trace_file: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts traced_peer.py with the given arguments; stops whatever is left at the end."""
    started: list[subprocess.Popen] = []
    env = {**os.environ, "TRACE_FILE": str(trace_file), "OTEL_TRACES_EXPORTER": "jsonl",
           "TRACE_SAMPLE_RATIO": "1.0", "PYTHONPATH": str(ROOT)}

    def start(*args: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, str(PEER), *args], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=10)
        process.stdout.close()


@pytest.fixture
def queue(amqp_url: str) -> str:
    """A fresh queue name. The consuming peer declares it exclusive and auto-delete, so the
    broker drops it as soon as that process's connection closes, however the test ends."""
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url)).close()
    except AMQPError as error:
        pytest.fail(f"the tracing contract needs the RabbitMQ at {amqp_url} ({error!r}); "
                    "start it or set AMQP_URL")
    return f"tracing-contract-{uuid.uuid4().hex[:12]}"


def first_line(process: subprocess.Popen) -> str:
    line = process.stdout.readline().strip()
    assert line, f"the peer exited (code {process.wait(timeout=10)}) before saying anything"
    return line


def spans_when(trace_file: Path, ready: Callable[[list[SpanRecord]], bool],
               timeout: float = 15.0) -> list[SpanRecord]:
    """The spans of the file, once `ready(spans)` holds (they are written as each span ends)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = load_spans(trace_file) if trace_file.exists() else []
        if ready(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


def only(spans: list[SpanRecord], **fields: str) -> SpanRecord:
    matches = [span for span in spans if all(span[key] == value for key, value in fields.items())]
    assert len(matches) == 1, f"expected one span with {fields}, found {len(matches)} in {spans}"
    return matches[0]


def call_chain(start_peer: Callable[..., subprocess.Popen], **params: str) -> requests.Response:
    """Services `front` -> `back`, each in its own process; one request to `front`."""
    back = start_peer("serve", "back")
    back_url = f"http://127.0.0.1:{first_line(back)}"
    front = start_peer("serve", "front", back_url)
    front_url = f"http://127.0.0.1:{first_line(front)}"
    session = requests.Session()
    session.trust_env = False
    return session.get(f"{front_url}/api/v1/hop", params=params, timeout=10)


def test_a_call_between_two_services_is_one_trace(start_peer, trace_file):
    answer = call_chain(start_peer)
    assert answer.json() == {"served_by": ["front", "back"]}

    spans = spans_when(trace_file, lambda spans: len(spans) >= 3)
    front_server = only(spans, service="front", kind="server")
    front_client = only(spans, service="front", kind="client")
    back_server = only(spans, service="back", kind="server")
    assert front_server["parent_id"] is None  # the test itself is not traced: front starts it
    assert {span["trace_id"] for span in spans} == {front_server["trace_id"]}
    assert front_client["parent_id"] == front_server["span_id"]
    assert back_server["parent_id"] == front_client["span_id"]
    assert "/api/v1/hop" in back_server["name"]
    assert back_server["status"] != "error"

    drawing = waterfall(spans)
    assert [line.split()[0] for line in drawing.splitlines()[2:]] == ["front", "front", "back"]


def test_a_failure_downstream_is_marked_on_both_sides(start_peer, trace_file):
    answer = call_chain(start_peer, fail="1")
    assert answer.status_code == 502

    spans = spans_when(trace_file, lambda spans: len(spans) >= 3)
    back_server = only(spans, service="back", kind="server")
    front_client = only(spans, service="front", kind="client")
    assert back_server["status"] == "error"
    assert back_server["attributes"]["http.status_code"] == 500
    assert front_client["status"] == "error"
    assert back_server["parent_id"] == front_client["span_id"]
    assert "✗" in waterfall(spans)


def test_a_consumer_continues_the_publishers_trace_through_rabbitmq(
        start_peer, trace_file, amqp_url, queue):
    consumer = start_peer("consume", amqp_url, queue)
    assert first_line(consumer) == "ready"
    publisher = start_peer("publish", amqp_url, queue)
    trace_id = first_line(publisher)
    headers = first_line(consumer)  # the consumer has handled the message
    assert trace_id in headers  # traceparent: 00-<trace id>-<span id>-01

    spans = spans_when(trace_file, lambda spans: any(s["service"] == "warehouse" for s in spans))
    handled = only(spans, service="warehouse")
    assert handled["name"] == "order.created process"
    assert handled["kind"] == "consumer"
    assert handled["trace_id"] == trace_id
    # The publisher's spans: `place order`, and the pika instrumentation's producer span inside
    # it, which is the one whose context went out with the message.
    place_order = only(spans, service="shop", name="place order")
    sent = only(spans, service="shop", kind="producer")
    assert sent["parent_id"] == place_order["span_id"]
    assert handled["parent_id"] == sent["span_id"]


def test_a_message_sent_later_from_stored_headers_stays_in_the_trace(
        start_peer, trace_file, amqp_url, queue):
    consumer = start_peer("consume", amqp_url, queue)
    assert first_line(consumer) == "ready"
    trace_id = first_line(start_peer("relay", amqp_url, queue))
    first_line(consumer)

    spans = spans_when(trace_file, lambda spans: any(s["service"] == "warehouse" for s in spans))
    assert {span["trace_id"] for span in spans} == {trace_id}
    place_order = only(spans, name="place order")
    relay = only(spans, name="outbox relay")
    sent = only(spans, kind="producer", parent_id=relay["span_id"])
    handled = only(spans, service="warehouse")
    assert relay["parent_id"] == place_order["span_id"]
    assert relay["start_ns"] >= place_order["end_ns"]
    assert handled["parent_id"] == sent["span_id"]


def test_processes_sharing_the_trace_file_never_mix_their_lines(start_peer, trace_file):
    # Lines of 10 kB: well past PIPE_BUF (4 kB), the size up to which pipes promise atomicity.
    floods = [start_peer("flood", "300", "10000") for _ in range(3)]
    assert [process.wait(timeout=30) for process in floods] == [0, 0, 0]

    spans = load_spans(trace_file)  # every line parses as JSON
    assert len(spans) == 900
    assert all(len(span["attributes"]["filler"]) == 10000 for span in spans)

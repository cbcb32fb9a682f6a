"""Distributed tracing: follow one request through every service it touches.

Protects against: a request that is slow or fails somewhere you cannot see. The gateway logs
"took 4 s", orders logs "took 3.9 s", and nobody can say which of the twenty calls behind it
were slow, or which one failed. With tracing, every piece of work (a request served, an HTTP
call made, a query, a message published or consumed) is a *span* with a start, a duration and a
status; spans share the *trace id* of the request that caused them and point at their *parent*.
The trace id and the caller's span id travel with every call in the W3C `traceparent` header
(HTTP) or message header (AMQP), so the tree can be rebuilt across processes: `waterfall()`
draws it, and `patterns.logs` stamps the same trace id on every log line.

    setup_tracing("orders", app)               # in create_app, i.e. in the worker after the fork
    orders = ServiceClient(..., context=inject_headers)      # outgoing HTTP carries the context
    bus = Bus(url, headers_provider=inject_headers)          # outgoing messages carry it too
    with span_from_message(message.headers, "order.created process"):
        reserve_stock(...)                     # a child of the span that published the message

    for trace_id, spans in traces(load_spans(".microlab/traces.jsonl")).items():
        print(waterfall(spans))

Knobs (arguments of `setup_tracing`, or environment variables):

- `exporter` / OTEL_TRACES_EXPORTER — where finished spans go. `jsonl` (default): one JSON line
  per span appended to `trace_file`. `otlp`: to the collector at OTEL_EXPORTER_OTLP_ENDPOINT
  (Jaeger in compose, e.g. `http://jaeger:4318`), batched; needs the package
  `opentelemetry-exporter-otlp-proto-http`. `console`: the same JSON lines on stderr. `none`:
  spans are not kept, but trace ids still travel and still appear in the logs.
- `trace_file` / TRACE_FILE — the JSON-lines file, `.microlab/traces.jsonl` by default. Every
  service of the sandbox appends to the same file (see `JsonLinesSpanExporter`).
- `sample_ratio` / TRACE_SAMPLE_RATIO — the share of traces kept, 1.0 by default. A load test
  at a few hundred requests a second writes megabytes of spans a second: lower it there. The
  decision is made once, where the trace starts, and travels with the context, so a trace is
  kept or dropped whole.
- `excluded_urls` / OTEL_PYTHON_FLASK_EXCLUDED_URLS — comma-separated regular expressions of
  request URLs not traced; `/health$` by default, or health probes would fill the file.

What starts a trace: a request served, a message consumed, or a span opened on purpose. An HTTP
or database call made outside any of those (a relay polling MongoDB, a heartbeat to the
registry) starts none, and neither does the request it causes downstream: background chatter
would otherwise add a one-span trace several times a second.

The official instrumentations make the spans of Flask (the app given), urllib3 (calls made
with `patterns.http.ServiceClient`), requests (the gateway's forwarding), pika and pymongo.
Tracing is set up once per process: a second call only instruments the app it is given.

A message published long after the request that caused it (the outbox relay, a retried copy)
carries that request's context in its stored headers, but the pika instrumentation gives every
message it sends the context of the span current *at publish time*. Publish it inside
`span_from_message(stored_headers, "relay order.created", kind=SpanKind.PRODUCER)`, and the
trace goes on (with the relay's delay visible in the waterfall).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika.connection
from flask import Flask
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.pika import PikaInstrumentor
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (BatchSpanProcessor, ConsoleSpanExporter,
                                            SimpleSpanProcessor, SpanExporter, SpanExportResult)
from opentelemetry.sdk.trace.sampling import (ALWAYS_OFF, ParentBased, Sampler, SamplingResult,
                                              TraceIdRatioBased)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

DEFAULT_TRACE_FILE = ".microlab/traces.jsonl"
# Not traced: health probes and the admin views the supervisor and the dashboard poll every
# second or two (each would be a trace of its own, burying the learner's requests).
DEFAULT_EXCLUDED_URLS = "/health$,/admin/breakers$,/admin/sagas$"
EXPORTERS = ("jsonl", "otlp", "console", "none")

SpanRecord = dict[str, Any]  # one span as written by JsonLinesSpanExporter and read by load_spans

_setup_lock = threading.Lock()
_provider: TracerProvider | None = None
_traced_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


def setup_tracing(service_name: str, app: Flask | None = None, *, exporter: str | None = None,
                  trace_file: str | Path | None = None, sample_ratio: float | None = None,
                  excluded_urls: str | None = None) -> TracerProvider:
    """Trace this process as `service_name` and, if given, the Flask `app`; safe to call twice.

    Call it in the process that serves (inside create_app, after gunicorn forked the worker):
    the span processor and the file it writes are per process."""
    global _provider
    with _setup_lock:
        if _provider is None:
            _provider = make_tracer_provider(service_name, exporter, trace_file, sample_ratio)
            trace.set_tracer_provider(_provider)
            RequestsInstrumentor().instrument(tracer_provider=_provider)
            # patterns.http calls through urllib3 itself; a call made with requests gets one
            # span, requests', which keeps the urllib3 one beneath it quiet.
            URLLib3Instrumentor().instrument(tracer_provider=_provider)
            PikaInstrumentor().instrument(tracer_provider=_provider)
            # 0.66b1 also wraps the connection under each BlockingConnection, so every publish
            # made two nested "send" spans. We only use BlockingConnection: keep its wrapper.
            unwrap(pika.connection.Connection, "channel")
            PymongoInstrumentor().instrument(tracer_provider=_provider)
        elif _provider.resource.attributes.get(SERVICE_NAME) != service_name:
            log.warning("tracing is already set up in this process; its spans keep their name",
                        extra={"traced_as": _provider.resource.attributes.get(SERVICE_NAME),
                               "ignored_name": service_name})
        if app is not None and app not in _traced_apps:
            if excluded_urls is None:
                excluded_urls = os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS",
                                               DEFAULT_EXCLUDED_URLS)
            FlaskInstrumentor.instrument_app(app, tracer_provider=_provider,
                                             excluded_urls=excluded_urls)
            _traced_apps.add(app)
        return _provider


def make_tracer_provider(service_name: str, exporter: str | None = None,
                         trace_file: str | Path | None = None,
                         sample_ratio: float | None = None) -> TracerProvider:
    """The provider `setup_tracing` installs, built but not installed (tests, notebooks)."""
    if sample_ratio is None:
        sample_ratio = float(os.environ.get("TRACE_SAMPLE_RATIO", "1.0"))
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}),
                              sampler=ParentBased(root=_EntryPointsOnly(sample_ratio)))
    kind = (exporter or os.environ.get("OTEL_TRACES_EXPORTER", "jsonl")).lower()
    if kind not in EXPORTERS:
        raise ValueError(f"unknown trace exporter {kind!r}: choose one of {', '.join(EXPORTERS)}")
    if kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp but opentelemetry-exporter-otlp-proto-http "
                        "is not installed: writing spans to the trace file instead")
            kind = "jsonl"
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if kind == "jsonl":
        path = trace_file or os.environ.get("TRACE_FILE", DEFAULT_TRACE_FILE)
        # Written as each span ends: a crash loses nothing, and readers see spans at once.
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    elif kind == "console":
        provider.add_span_processor(SimpleSpanProcessor(
            ConsoleSpanExporter(out=sys.stderr, formatter=_json_line)))
    return provider


class _EntryPointsOnly(Sampler):
    """Starts a trace for a share of the spans that begin work; never for a client call (HTTP,
    database) made outside a trace."""

    def __init__(self, ratio: float) -> None:
        self.ratio = TraceIdRatioBased(ratio)

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        sampler = ALWAYS_OFF if kind == SpanKind.CLIENT else self.ratio
        return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                     trace_state)

    def get_description(self) -> str:
        return f"EntryPointsOnly({self.ratio.get_description()})"


# Writing spans ---------------------------------------------------------------------------------

def span_record(span: ReadableSpan) -> SpanRecord:
    """A finished span as a flat JSON-ready dict; ids in hex, as in `traceparent` and the logs."""
    parent = span.parent
    return {
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "service": span.resource.attributes.get(SERVICE_NAME, "unknown"),
        "name": span.name,
        "kind": span.kind.name.lower(),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "duration_ms": round((span.end_time - span.start_time) / 1e6, 3),
        "status": span.status.status_code.name.lower(),
        "status_message": span.status.description,
        "attributes": dict(span.attributes),
        "events": [{"name": event.name, "time_ns": event.timestamp,
                    "attributes": dict(event.attributes)} for event in span.events],
    }


def _json_line(span: ReadableSpan) -> str:
    """`span_record(span)` as one line of JSON, newline included."""
    return json.dumps(span_record(span), default=str) + "\n"


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span to `path` as one JSON line; any number of processes may share the file.

    Why lines never mix: the file is opened with O_APPEND and each batch of lines goes out in one
    `os.write`, which the kernel places at the current end of the file in one piece, whatever
    other processes append meanwhile. A write can still come back short (disk full, a signal),
    and then the rest would follow another process's line; so the writes of a batch happen under
    an exclusive `flock` on the file (other processes) and a thread lock (this process's threads,
    which share one descriptor, and so one flock). The lock is held for one write: microseconds.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = memoryview("".join(map(_json_line, spans)).encode())
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# Passing the context on ------------------------------------------------------------------------

class _AnyCaseGetter(Getter[Mapping[str, Any]]):
    """Reads a header from HTTP headers (any case) or AMQP headers (str or bytes values)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        for name, value in carrier.items():
            if name.lower() == key:
                return [value.decode() if isinstance(value, bytes) else str(value)]
        return None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _AnyCaseGetter()


def inject_headers(headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `headers` plus the current trace context (`traceparent`, `tracestate`).

    With no argument it is the zero-argument callable the HTTP client (`context=`) and the bus
    (`headers_provider=`) ask for. Outside any span it adds nothing."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, Any] | None) -> Context:
    """The trace context carried by incoming HTTP or message headers (empty if there is none)."""
    return propagate.extract(headers or {}, getter=_GETTER)


@contextmanager
def span_from_message(headers: Mapping[str, Any] | None, name: str, *,
                      kind: SpanKind = SpanKind.CONSUMER,
                      attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """A span, current inside the block, that is a child of the span whose context `headers`
    carry: a consumer's handling of a message becomes part of the publisher's trace. No
    instrumentation is needed, and it works on any thread. An exception leaving the block is
    recorded on the span, marks it as an error, and propagates."""
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(name, context=extract_context(headers), kind=kind,
                                      attributes=dict(attributes or {})) as span:
        yield span


# Reading spans back ----------------------------------------------------------------------------

def load_spans(path: str | Path) -> list[SpanRecord]:
    """The spans in a JSON-lines trace file. A last line without its newline is skipped: a
    process is still writing it."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def traces(spans: Sequence[SpanRecord]) -> dict[str, list[SpanRecord]]:
    """Spans grouped by trace id, the trace that started first first."""
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    return dict(sorted(by_trace.items(),
                       key=lambda item: min(span["start_ns"] for span in item[1])))


def span_tree(spans: Sequence[SpanRecord]) -> list[tuple[int, SpanRecord]]:
    """The spans of one trace depth first, each with its depth; siblings in start order.

    A span whose parent is not among `spans` (its service is not traced, or has not written it
    yet) is shown as a root."""
    ids = {span["span_id"] for span in spans}
    children: dict[str | None, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children[parent].append(span)
    rows: list[tuple[int, SpanRecord]] = []

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: (s["start_ns"], s["span_id"])):
            rows.append((depth, span))
            visit(span["span_id"], depth + 1)

    visit(None, 0)
    return rows


def waterfall(spans: Sequence[SpanRecord], width: int = 40) -> str:
    """One trace as text: a line per span with its service, its name indented by depth, its
    start (ms after the trace began), its duration (ms) and a bar on the trace's time scale.
    Spans that failed are marked ✗."""
    rows = span_tree(spans)
    begin = min(span["start_ns"] for span in spans)
    total = max(max(span["end_ns"] for span in spans) - begin, 1)
    labels = ["  " * depth + span["name"] + (" ✗" if span["status"] == "error" else "")
              for depth, span in rows]
    service_width = max(len("service"), *(len(span["service"]) for span in spans))
    label_width = max(len("span"), *map(len, labels))
    services = ", ".join(sorted({span["service"] for span in spans}))
    lines = [f"trace {spans[0]['trace_id']} · {len(spans)} spans · {services} · "
             f"{total / 1e6:.1f} ms",
             f"{'service':<{service_width}}  {'span':<{label_width}}  start ms    dur ms"]
    for label, (_, span) in zip(labels, rows):
        start, end = span["start_ns"] - begin, span["end_ns"] - begin
        first = min(width - 1, start * width // total)
        last = max(first + 1, round(end * width / total))
        bar = " " * first + "█" * (last - first) + " " * (width - last)
        lines.append(f"{span['service']:<{service_width}}  {label:<{label_width}}  "
                     f"{start / 1e6:8.1f}  {(end - start) / 1e6:8.1f}  |{bar}|")
    return "\n".join(lines)

"""Reading traces back: the span tree, its order, the text waterfall, and the JSON-lines file."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from patterns.tracing import (extract_context, inject_headers, load_spans, make_tracer_provider,
                              span_tree, traces, waterfall)

MS = 1_000_000  # nanoseconds


def span(span_id: str, parent_id: str | None, name: str, start_ms: float, end_ms: float,
         service: str = "orders", status: str = "unset", trace_id: str = "t1") -> dict:
    return {"trace_id": trace_id, "span_id": span_id, "parent_id": parent_id, "name": name,
            "service": service, "kind": "internal", "start_ns": int(1e12 + start_ms * MS),
            "end_ns": int(1e12 + end_ms * MS), "status": status, "attributes": {}, "events": []}


# A checkout as the gateway sees it: orders reserves stock, then charges, which fails.
# Listed out of order on purpose: files interleave spans as each one ends.
CHECKOUT = [
    span("charge", "orders-in", "POST payments", 60, 95, status="error"),
    span("orders-in", "gw-out", "POST /api/v1/orders", 5, 98, status="error"),
    span("reserve", "orders-in", "POST inventory", 10, 50),
    span("gw-in", None, "POST /api/orders", 0, 100, service="gateway", status="error"),
    span("db", "reserve", "shop.insert", 20, 20, service="inventory"),
    span("gw-out", "gw-in", "POST", 2, 99, service="gateway"),
]


def names_by_depth(spans: list[dict]) -> list[tuple[int, str]]:
    return [(depth, row["name"]) for depth, row in span_tree(spans)]


def test_the_tree_is_rebuilt_depth_first_with_siblings_in_start_order():
    assert names_by_depth(CHECKOUT) == [
        (0, "POST /api/orders"),
        (1, "POST"),
        (2, "POST /api/v1/orders"),
        (3, "POST inventory"),
        (4, "shop.insert"),
        (3, "POST payments"),
    ]


def test_a_span_whose_parent_is_missing_is_shown_as_a_root():
    spans = [span("late", "not-written-yet", "consume order.created", 30, 40),
             span("root", None, "GET /api/orders", 0, 20)]
    assert names_by_depth(spans) == [(0, "GET /api/orders"), (0, "consume order.created")]


def test_siblings_that_start_together_keep_a_stable_order():
    spans = [span("b", "root", "second", 1, 2), span("a", "root", "first", 1, 3),
             span("root", None, "root", 0, 5)]
    assert names_by_depth(spans) == [(0, "root"), (1, "first"), (1, "second")]


def test_spans_are_grouped_by_trace_earliest_trace_first():
    later = [span("x", None, "GET /later", 500, 510, trace_id="t2")]
    grouped = traces(later + CHECKOUT)
    assert list(grouped) == ["t1", "t2"]
    assert len(grouped["t1"]) == len(CHECKOUT)


def test_the_waterfall_shows_service_depth_timing_and_errors():
    lines = waterfall(CHECKOUT, width=20).splitlines()
    assert lines[0] == "trace t1 · 6 spans · gateway, inventory, orders · 100.0 ms"
    rows = [line.split("|")[0] for line in lines[2:]]
    assert rows[0].split() == ["gateway", "POST", "/api/orders", "✗", "0.0", "100.0"]
    assert rows[2].split() == ["orders", "POST", "/api/v1/orders", "✗", "5.0", "93.0"]
    assert rows[4].split() == ["inventory", "shop.insert", "20.0", "0.0"]
    label_column = lines[1].index("span")
    indents = [len(row[label_column:]) - len(row[label_column:].lstrip()) for row in rows]
    assert indents == [0, 2, 4, 6, 8, 6]
    assert sum("✗" in row for row in rows) == 3


def test_bars_are_drawn_on_the_traces_time_scale():
    bars = [line.split("|")[1] for line in waterfall(CHECKOUT, width=20).splitlines()[2:]]
    assert all(len(bar) == 20 for bar in bars)
    assert bars[0] == "█" * 20                      # the root spans the whole trace
    assert bars[3] == " " * 2 + "█" * 8 + " " * 10  # 10-50 ms of 100 ms
    assert bars[4] == " " * 4 + "█" + " " * 15      # a 0 ms span still shows one block
    assert bars[5] == " " * 12 + "█" * 7 + " " * 1  # 60-95 ms


def test_a_trace_file_round_trip(tmp_path: Path):
    trace_file = tmp_path / "nested" / "traces.jsonl"
    provider = make_tracer_provider("payments", exporter="jsonl", trace_file=trace_file)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /api/v1/charges", kind=SpanKind.SERVER) as server:
        with pytest.raises(ValueError):
            with tracer.start_as_current_span("provider call", kind=SpanKind.CLIENT):
                raise ValueError("card declined")
    provider.shutdown()

    charge, call = sorted(load_spans(trace_file), key=lambda s: s["start_ns"])
    assert charge["trace_id"] == format(server.get_span_context().trace_id, "032x")
    assert (charge["service"], charge["kind"], charge["parent_id"]) == ("payments", "server", None)
    assert (call["kind"], call["parent_id"]) == ("client", charge["span_id"])
    assert call["status"] == "error"
    assert call["events"][0]["attributes"]["exception.message"] == "card declined"
    assert "provider call ✗" in waterfall([charge, call])


def test_a_client_call_outside_any_trace_is_not_recorded(tmp_path: Path):
    trace_file = tmp_path / "traces.jsonl"
    provider = make_tracer_provider("outbox-relay", exporter="jsonl", trace_file=trace_file)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("orders.find", kind=SpanKind.CLIENT) as poll:
        headers = inject_headers()  # what a heartbeat to the registry would carry
    with tracer.start_as_current_span("relay pass"):
        with tracer.start_as_current_span("orders.find", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()

    assert not poll.is_recording()
    flags = int(headers["traceparent"].rsplit("-", 1)[1], 16)
    assert flags & 1 == 0  # "not sampled": the service called records nothing either
    assert [s["name"] for s in load_spans(trace_file)] == ["orders.find", "relay pass"]


@pytest.mark.parametrize("ratio, kept", [(1.0, 2), (0.0, 0)])
def test_the_sample_ratio_keeps_or_drops_whole_traces(tmp_path: Path, ratio: float, kept: int):
    trace_file = tmp_path / "traces.jsonl"
    provider = make_tracer_provider("gateway", "jsonl", trace_file, sample_ratio=ratio)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /api/orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()
    assert len(load_spans(trace_file)) == kept


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("headers", [
    {"traceparent": TRACEPARENT},
    {"Traceparent": TRACEPARENT, "X-Request-Id": "r-1"},  # HTTP headers keep their case
    {"traceparent": TRACEPARENT.encode()},                 # AMQP headers may hold bytes
])
def test_the_context_is_read_from_http_or_message_headers(headers: dict):
    context = trace.get_current_span(extract_context(headers)).get_span_context()
    assert (context.trace_id, context.span_id) == (0x0af7651916cd43dd8448eb211c80319c,
                                                   0xb7ad6b7169203331)
    assert context.is_remote


def test_headers_without_a_context_give_none():
    assert not trace.get_current_span(extract_context({"x": "1"})).get_span_context().is_valid
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid


def test_a_line_still_being_written_is_skipped(tmp_path: Path):
    trace_file = tmp_path / "traces.jsonl"
    whole = '{"trace_id": "t1", "span_id": "a", "name": "done"}\n'
    trace_file.write_text(whole + '{"trace_id": "t1", "span_id": "b", "na')
    assert [s["name"] for s in load_spans(trace_file)] == ["done"]

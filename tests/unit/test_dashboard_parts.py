"""The dashboard's pure parts: form numbers, Toxiproxy's /metrics text, breaker transitions seen
once each, and which edge a client span used."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from microlab.chaosproxy.metrics import RECEIVED, SENT, ProxyMetrics
from microlab.dashboard.app import create_app
from microlab.dashboard import sandbox as dashboard_sandbox
from microlab.dashboard.sandbox import (
    DashboardError,
    SpanFollower,
    TransitionLog,
    parse_proxy_metrics,
    span_port,
    whole_number,
)


@pytest.mark.parametrize("value, expected", [("800", 800), (0, 0), (" 25 ", 25), ("60000", 60000)])
def test_whole_numbers_are_read_from_the_form(value: object, expected: int) -> None:
    assert whole_number(value, "latency (ms)", 60_000) == expected


@pytest.mark.parametrize("value", ["-5", "abc", "", None, "1.5", "60001", "1e3", True])
def test_anything_else_is_refused_in_words(value: object) -> None:
    with pytest.raises(DashboardError, match=r"latency \(ms\) must be a whole number from 0"):
        whole_number(value, "latency (ms)", 60_000)


def test_proxy_metrics_are_summed_per_proxy_over_both_directions() -> None:
    metrics = ProxyMetrics()  # our chaos proxy's own output, as the page reads it
    labels = ("upstream", "127.0.0.1:20001", "orders_to_payments", "127.0.0.1:3005")
    metrics.add(RECEIVED, labels, 1_000_000)
    metrics.add(RECEIVED, ("downstream", *labels[1:]), 500)
    metrics.add(SENT, labels, 7)
    assert parse_proxy_metrics(metrics.render().decode()) == {
        "orders_to_payments": {"received": 1_000_500.0, "sent": 7.0}}


def test_each_transition_is_listed_once_and_a_restarted_breaker_starts_over() -> None:
    log = TransitionLog()
    first = {"orders": {"payments": {"transitions": [
        {"number": 1, "from": "closed", "to": "open", "seconds_ago": 4.0}]}}}
    assert [e["to"] for e in log.update(first, now=100.0)] == ["open"]
    later = {"orders": {"payments": {"transitions": [
        {"number": 1, "from": "closed", "to": "open", "seconds_ago": 6.0},
        {"number": 2, "from": "open", "to": "half_open", "seconds_ago": 1.0}]}}}
    events = log.update(later, now=102.0)
    assert [(e["to"], e["at"]) for e in events] == [("half_open", 101.0), ("open", 96.0)]
    restarted = {"orders": {"payments": {"transitions": [
        {"number": 1, "from": "closed", "to": "open", "seconds_ago": 0.5}]}}}
    assert len(log.update(restarted, now=110.0)) == 3


@pytest.mark.parametrize("span, port", [
    ({"attributes": {"http.url": "http://127.0.0.1:20007/api/v1/payments/charges"}}, 20007),
    ({"attributes": {"net.peer.port": 20001}}, 20001),
    ({"attributes": {"http.url": "http://127.0.0.1/x"}}, None),
    ({"attributes": {}}, None),
])
def test_the_port_a_client_span_called(span: dict, port: int | None) -> None:
    assert span_port(span) == port


@pytest.mark.parametrize("host, refused", [("127.0.0.1:8488", False), ("localhost:8488", False),
                                           ("evil.example:8488", True), ("10.0.0.5", True)])
def test_the_page_answers_only_under_a_loopback_name(host: str, refused: bool) -> None:
    # A page whose DNS name is rebound to 127.0.0.1 must not drive the sandbox.
    client = create_app(sandbox=SimpleNamespace()).test_client()  # type: ignore[arg-type]
    answer = client.get("/", headers={"Host": host})
    assert (answer.status_code == 421) is refused


def test_a_long_span_file_is_read_from_its_end_then_followed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(dashboard_sandbox, "SPANS_TAIL_BYTES", 200)
    spans = tmp_path / "traces.jsonl"
    spans.write_text("".join(f'{{"name": "old {n}"}}\n' for n in range(1000)))
    follower = SpanFollower()
    first = follower.read(spans)
    assert 0 < len(first) < 20 and first[-1] == {"name": "old 999"}  # no cut line, no error
    with open(spans, "a") as file:
        file.write('{"name": "new"}\n')
    assert follower.read(spans)[-1] == {"name": "new"}

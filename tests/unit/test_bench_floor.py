"""The floor under an order's CPU (bench/floor_bench.py) and the operation counts it prices
(bench/sandbox_bench.py), on made-up spans and costs, without a sandbox."""

from __future__ import annotations

from bench.floor_bench import OPERATIONS, floor, render
from bench.sandbox_bench import operations

WINDOW = (1_000, 2_000)


def span(kind: str, start_ns: int = 1_500, **attributes: str) -> dict:
    return {"kind": kind, "start_ns": start_ns, "attributes": attributes}


def test_spans_are_counted_by_the_operation_they_record_within_the_window():
    spans = [
        span("server", **{"http.method": "POST"}),
        span("server", **{"http.request.method": "GET"}),
        span("client", **{"http.method": "POST"}),  # urllib3 / requests
        span("client", **{"db.system": "mongodb"}),  # counted by the server's opcounters
        span("producer", **{"messaging.system": "rabbitmq"}),
        span("producer"),  # the relay's own span around the publish: not a second message
        span("consumer", **{"messaging.system": "rabbitmq"}),
        span("consumer", **{"messaging.system": "rabbitmq"}),
        span("consumer"),  # "order.created process", inside the delivery
        span("internal"),
        span("server", start_ns=999), span("server", start_ns=2_001),  # outside the window
    ]

    assert operations(spans, *WINDOW) == {"http_served": 2, "http_calls": 1, "publishes": 1,
                                          "deliveries": 2}


UNITS = {"mongo_op": {"client": 0.1, "server": 0.2, "proxy": 0.05},
         "http_call": {"client": 0.2, "proxy": 0.05}, "http_served": {"server": 0.3},
         "publish": {"client": 0.1, "proxy": 0.05}, "delivery": {"client": 0.1, "proxy": 0.02}}
PER_ORDER = {"mongo_ops": 30.0, "http_calls": 6.0, "http_served": 7.0, "publishes": 5.0,
             "deliveries": 8.0}
SANDBOX = {"date": "2026-12-05 14:00 UTC", "figures": {"cpu_ms_per_order": 40.0}}
MACHINE = {"date": "2026-12-05 14:05 UTC", "cpus": 2, "python": "3.11.7"}


def test_the_floor_is_each_count_times_the_bare_cost_of_one():
    rows = floor(PER_ORDER, UNITS)

    assert [row["label"] for row in rows] == [label for _, _, label in OPERATIONS]
    assert [round(row["ms"], 3) for row in rows] == [10.5, 1.5, 2.1, 0.75, 0.96]
    assert round(sum(row["ms"] for row in rows), 3) == 15.81


def test_the_report_says_what_the_floor_leaves_under_the_target():
    report = render(floor(PER_ORDER, UNITS), SANDBOX, "bench-sandbox.json", MACHINE, 2000)

    assert "| **floor** | | | | **15.8** |" in report
    assert "An order cost **40.0 ms**" in report
    assert "**15.8 ms** (40 %)" in report
    assert "the floor leaves 4.2 ms for all of that" in report


def test_the_report_says_when_the_floor_alone_is_above_the_target():
    report = render(floor({**PER_ORDER, "mongo_ops": 60.0}, UNITS), SANDBOX,
                    "bench-sandbox.json", MACHINE, 2000)

    assert "| **floor** | | | | **26.3** |" in report
    assert "the floor alone is above it, so no tuning of our code can meet it" in report

"""The floor benchmark measures what it says, end to end: the embedded MongoDB, a Flask app under
gunicorn, the real RabbitMQ and the chaos proxy between each client and its server (about 10 s).
"""

from __future__ import annotations

from bench.floor_bench import measure_unit_costs


def test_every_unit_cost_is_measured_on_every_process_it_crosses():
    units = measure_unit_costs(rounds=1000)

    assert {unit: sorted(parts) for unit, parts in units.items()} == {
        "mongo_op": ["client", "proxy", "server"], "http_call": ["client", "proxy"],
        "http_served": ["server"], "publish": ["client", "proxy"],
        "delivery": ["client", "proxy"]}
    # Each process did work for the series: a part left out, or read from the wrong process,
    # would show as nothing (the clock ticks every 10 ms: 1000 operations of the cheapest kind
    # measured here take several ticks).
    assert units["mongo_op"]["server"] > 0 and units["mongo_op"]["proxy"] > 0
    assert units["http_served"]["server"] > 0 and units["http_call"]["proxy"] > 0
    assert units["publish"]["client"] > 0 and units["delivery"]["client"] > 0
    # A server does more per operation than the proxy that only copies its bytes (5x here):
    # a server's part read from the proxy's process would not.
    assert units["mongo_op"]["server"] > units["mongo_op"]["proxy"]
    assert units["http_served"]["server"] > units["http_call"]["proxy"]
    for unit, parts in units.items():
        assert 0 < sum(parts.values()) < 5, f"{unit}: {parts} ms per operation"

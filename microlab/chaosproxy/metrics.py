"""Toxiproxy's proxy metrics (`-proxy-metrics`): bytes through every proxy, for Prometheus.

Started with `-proxy-metrics`, the real server answers `GET /metrics` with two counters in the
Prometheus text format, one series per (direction, proxy, listener, upstream):

    toxiproxy_proxy_received_bytes_total   bytes a link read from its source
    toxiproxy_proxy_sent_bytes_total       bytes it wrote to its destination, after the toxics

`direction` is the link's: `upstream` (client → server) or `downstream` (server → client), so a
`limit_data` toxic shows up as received > sent. As in Go, a link adds its bytes when it *ends*
(the connection closes), not while data flows: a keep-alive connection counts nothing until it
is closed. A series appears once its first link has ended; before that, the body is empty.

The text is what Go's `client_golang` writes: families sorted by name, a `# HELP` line with the
(empty) help, labels in name order, series sorted by label values, values formatted like Go's
`strconv.FormatFloat(v, 'g', -1, 64)` (so 1000000 bytes is `1e+06`).
"""

from __future__ import annotations

from decimal import Decimal

RECEIVED = "toxiproxy_proxy_received_bytes_total"
SENT = "toxiproxy_proxy_sent_bytes_total"
# Label names, alphabetical as client_golang writes them: (direction, listener, proxy, upstream).
Labels = tuple[str, str, str, str]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ProxyMetrics:
    """The two byte counters of every proxy, kept in memory by the chaos proxy's event loop."""

    def __init__(self) -> None:
        self._series: dict[str, dict[Labels, float]] = {RECEIVED: {}, SENT: {}}

    def add(self, family: str, labels: Labels, value: int) -> None:
        series = self._series[family]
        series[labels] = series.get(labels, 0.0) + value

    def render(self) -> bytes:
        lines: list[str] = []
        for family in sorted(self._series):
            series = self._series[family]
            if not series:
                continue  # a counter vector with no series writes nothing, not even # TYPE
            lines += [f"# HELP {family} ", f"# TYPE {family} counter"]
            for labels in sorted(series):
                pairs = ",".join(f'{name}="{_escape(value)}"' for name, value in
                                 zip(("direction", "listener", "proxy", "upstream"), labels))
                lines.append(f"{family}{{{pairs}}} {go_float(series[labels])}")
        return "".join(line + "\n" for line in lines).encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def go_float(value: float) -> str:
    """`value` as Go's FormatFloat(value, 'g', -1, 64): shortest digits, an exponent from 1e+06."""
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    power = len(text) + exponent - 1  # the exponent in d.ddd × 10^power
    minus = "-" if sign else ""
    if power < -4 or power >= 6:  # Go's rule for the shortest 'g' format
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if power < 0:
        return f"{minus}0.{'0' * (-power - 1)}{text}"
    whole = text[: power + 1].ljust(power + 1, "0")
    rest = text[power + 1:]
    return f"{minus}{whole}{'.' + rest if rest else ''}"

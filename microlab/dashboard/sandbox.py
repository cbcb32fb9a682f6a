"""What the dashboard knows about the running sandbox, read only through its public surfaces.

The dashboard is a client like a notebook: it finds the sandbox the way `Lab` does (the
environment, else `.microlab/state.json`), and reads it over HTTP — every service's `/health`
and `/admin/breakers`, the Toxiproxy API and its `/metrics`, the gateway — plus the span file
the services append to and, for "check invariants", `microlab.checker`. Nothing here reaches
into a service's process, so the same page works against any sandbox it can reach.

The state file is read again on every request: when the sandbox restarts (new pids, maybe new
ports), the dashboard follows it, and `identity` changes so a page opened on the old one can
say so instead of acting on the wrong sandbox.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from microlab.chaos import ChaosClient, ChaosError
from microlab.lab import DEFAULT_RUN_DIR, Lab, place_order
from microlab.launcher import admin_session
from microlab.supervisor import RunDir

# How far back the per-edge numbers look, and how many spans are kept to compute them.
STATS_WINDOW_S = 30.0
SPANS_KEPT = 5000
SPANS_TAIL_BYTES = 4 * 1024 * 1024  # a first look at a long trace file reads only its end
PROBE_TIMEOUT_S = 2.0
MAX_LATENCY_MS = 60_000
MAX_ORDERS = 20
ORDER_TIMEOUT_S = 15.0
SOCKET_POLL_TIMEOUT_S = 70.0  # longer than Engine.IO's ping interval + timeout (25 + 20 s)
METRIC_LINE = re.compile(r'^toxiproxy_proxy_(received|sent)_bytes_total\{(.*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class DashboardError(Exception):
    """A request the dashboard refuses or cannot carry out; the message is shown on the page."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def whole_number(value: Any, what: str, maximum: int) -> int:
    """`value` (from a form: a number or a string) as an int in [0, maximum], else a clear error."""
    text = str(value).strip() if value is not None else ""
    if not re.fullmatch(r"[0-9]+", text) or int(text) > maximum:
        shown = text if text else "nothing"
        raise DashboardError(f"{what} must be a whole number from 0 to {maximum}, not {shown!r}")
    return int(text)


def parse_proxy_metrics(text: str) -> dict[str, dict[str, float]]:
    """Toxiproxy's `/metrics` as {proxy: {"received": bytes, "sent": bytes}}, both directions."""
    totals: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if not match:
            continue
        kind, labels, value = match.groups()
        proxy = dict(LABEL.findall(labels)).get("proxy", "")
        counts = totals.setdefault(proxy, {"received": 0.0, "sent": 0.0})
        counts[kind] += float(value)
    return totals


@dataclass
class EdgeStats:
    calls: int
    errors: int
    p95_ms: float | None

    def as_json(self, window: float) -> dict[str, Any]:
        return {"rate": round(self.calls / window, 2),
                "error_rate": round(self.errors / self.calls, 3) if self.calls else 0.0,
                "p95_ms": self.p95_ms, "calls": self.calls}


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)


def span_port(span: dict) -> int | None:
    """The port a client span called: from its URL (HTTP) or its peer attributes (MongoDB...)."""
    attributes = span.get("attributes") or {}
    url = attributes.get("http.url") or attributes.get("url.full")
    if url:
        try:
            return urlsplit(url).port
        except ValueError:
            return None
    port = attributes.get("net.peer.port") or attributes.get("server.port")
    return int(port) if isinstance(port, int | str) and str(port).isdigit() else None


def span_failed(span: dict) -> bool:
    status_code = (span.get("attributes") or {}).get("http.status_code")
    return span.get("status") == "error" or (isinstance(status_code, int) and status_code >= 500)


class SpanFollower:
    """Follows the span file like `tail -f`: each call reads only what was appended since."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._offset = 0
        self._partial = b""
        self.spans: deque[dict] = deque(maxlen=SPANS_KEPT)
        self._lock = threading.Lock()

    def read(self, path: Path | None) -> list[dict]:
        with self._lock:
            if path != self._path:  # another sandbox: start over
                self._path, self._offset, self._partial = path, 0, b""
                self.spans.clear()
            if path is None or not path.exists():
                return list(self.spans)
            size = path.stat().st_size
            if size < self._offset:  # the file was replaced
                self._offset, self._partial = 0, b""
                self.spans.clear()
            mid_line = self._offset == 0 and size > SPANS_TAIL_BYTES
            if mid_line:  # after a load test: only the recent spans matter, and memory does
                self._offset = size - SPANS_TAIL_BYTES
            with open(path, "rb") as file:
                file.seek(self._offset)
                data = self._partial + file.read()
                self._offset = file.tell()
            if mid_line:
                data = data.partition(b"\n")[2]  # the first line was cut by the seek
            *lines, self._partial = data.split(b"\n")
            for line in lines:
                if line.strip():
                    try:
                        self.spans.append(json.loads(line))
                    except ValueError:
                        continue  # a line cut by a crash: skip it, keep the rest
            return list(self.spans)


class Sandbox:
    """The sandbox the dashboard shows, re-found on every call (it may have restarted)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = environ
        self._lock = threading.Lock()
        self._lab: Lab | None = None
        self._identity = ""
        self._admin: requests.Session | None = None
        self._demo: requests.Session | None = None
        self._spans = SpanFollower()
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="dashboard")
        self._http = requests.Session()

    def close(self) -> None:
        """Let go of the threads and connections (the server's own process may live on)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # -- finding it ------------------------------------------------------------------------
    def current(self) -> tuple[Lab, str]:
        """The Lab for the sandbox running now, and that sandbox's identity."""
        lab = Lab.from_env(self._environ)
        state = RunDir(lab.run_dir or DEFAULT_RUN_DIR).read_state() or {}
        identity = f"{state.get('supervisor_pid', '')}@{state.get('started_at', '')}"
        with self._lock:
            if identity != self._identity or self._lab is None or self._lab.urls != lab.urls:
                self._lab, self._identity = lab, identity
                self._admin = self._demo = None  # tokens of an earlier run may not verify
            return self._lab, self._identity

    def state(self) -> dict[str, Any]:
        """Run-time facts for the page: the sandbox's urls, namespace and start time."""
        lab, identity = self.current()
        state = RunDir(lab.run_dir or DEFAULT_RUN_DIR).read_state() or {}
        return {"identity": identity, "started_at": state.get("started_at"),
                "namespace": lab.namespace, "gateway": lab.gateway,
                "ready": bool(state.get("ready", True))}

    def check_identity(self, expected: str | None) -> None:
        """Refuse an action from a page opened on an earlier sandbox."""
        _, identity = self.current()
        if expected is not None and expected != identity:
            raise DashboardError("this page was showing an earlier run of the sandbox, which "
                                 "has restarted since; the page now shows the new one — "
                                 "look again and retry", status=409)

    # -- reading it ------------------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """Each service's health in one word: ok, degraded or down."""
        lab, _ = self.current()

        def probe(name: str) -> str:
            try:
                answer = self._http.get(f"{lab.url(name)}/health", timeout=PROBE_TIMEOUT_S)
            except requests.RequestException:
                return "down"
            if answer.status_code == 200:
                return "ok"
            return "degraded" if answer.status_code == 503 else "down"

        names = list(lab.topology.services)
        return dict(zip(names, self._pool.map(probe, names)))

    def edges(self) -> tuple[list[dict], list[str]]:
        """Every edge with its state, toxics, recent numbers (from spans) and bytes (from
        /metrics when the chaos proxy has -proxy-metrics); plus problems met on the way."""
        lab, _ = self.current()
        if "chaos" not in lab.urls:
            return [], ["this sandbox runs without chaos proxies (--no-chaos): edges cannot "
                        "be slowed or cut"]
        try:
            proxies = {edge.proxy: edge for edge in lab.chaos.edges()}
        except requests.RequestException as error:
            return [], [f"the chaos proxy at {lab.urls['chaos']} {reason(error)}"]
        except ChaosError as error:
            return [], [f"the chaos proxy refused to list its proxies: {error}"]
        bytes_by_proxy = self._proxy_bytes(lab.urls["chaos"])
        by_port = {int(edge.listen.rsplit(":", 1)[1]): name
                   for name, edge in proxies.items() if ":" in edge.listen}
        stats = self._edge_stats(lab, by_port)
        rows = []
        for edge in lab.topology.edges():
            proxy = proxies.get(edge.proxy_name)
            if proxy is None:
                continue
            latency = next((toxic["attributes"] for toxic in proxy.toxics
                            if toxic["type"] == "latency"), None)
            state = "cut" if not proxy.enabled else "slowed" if proxy.toxics else "normal"
            rows.append({
                "name": edge.name, "caller": edge.caller, "callee": edge.callee,
                "http": edge.callee in lab.topology.services, "state": state,
                "latency_ms": latency.get("latency") if latency else None,
                "jitter_ms": latency.get("jitter") if latency else None,
                "toxics": [toxic["type"] for toxic in proxy.toxics],
                "bytes": bytes_by_proxy.get(edge.proxy_name) if bytes_by_proxy is not None
                else None,
                **stats.get(edge.proxy_name, EdgeStats(0, 0, None)).as_json(STATS_WINDOW_S)})
        return rows, []

    def _proxy_bytes(self, chaos_url: str) -> dict | None:
        try:
            answer = self._http.get(f"{chaos_url}/metrics", timeout=PROBE_TIMEOUT_S)
        except requests.RequestException:
            return None
        if answer.status_code == 404:  # started without -proxy-metrics: no bytes to show
            return None
        return parse_proxy_metrics(answer.text) if answer.ok else None

    def _edge_stats(self, lab: Lab, by_port: dict[int, str]) -> dict[str, EdgeStats]:
        spans = self._spans.read(lab.trace_file)
        since = time.time_ns() - int(STATS_WINDOW_S * 1e9)
        durations: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        for span in spans:
            if span.get("kind") != "client" or span.get("end_ns", 0) < since:
                continue
            proxy = by_port.get(span_port(span) or -1)
            if proxy is None:
                continue
            durations.setdefault(proxy, []).append(span["duration_ms"])
            errors[proxy] = errors.get(proxy, 0) + span_failed(span)
        return {proxy: EdgeStats(len(values), errors[proxy], p95(values))
                for proxy, values in durations.items()}

    def breakers(self) -> tuple[dict[str, dict], list[str]]:
        """{service: {peer: snapshot}} for every service that answers; and who did not."""
        lab, _ = self.current()
        admin = self._admin_session(lab)
        names = [name for name, service in lab.topology.services.items() if service.calls]

        def fetch(name: str) -> dict | str:
            try:
                answer = admin.get(f"{lab.url(name)}/admin/breakers", timeout=PROBE_TIMEOUT_S)
            except requests.RequestException:
                return f"{name} does not answer"
            if answer.status_code == 401:
                self._admin = None  # the token is stale (users restarted with a new secret?)
            return answer.json() if answer.ok else f"{name}: {answer.status_code}"

        found, problems = {}, []
        for name, result in zip(names, self._pool.map(fetch, names)):
            if isinstance(result, str):
                problems.append(result)
            else:
                found[name] = result
        return found, problems

    def sagas(self, limit: int = 10) -> list[dict]:
        """The latest sagas from the orders service's saga log (its admin route)."""
        lab, _ = self.current()
        admin = self._admin_session(lab)
        try:
            answer = admin.get(f"{lab.url('orders')}/admin/sagas", params={"limit": limit},
                               timeout=PROBE_TIMEOUT_S)
        except requests.RequestException:
            raise DashboardError("the orders service does not answer", 503) from None
        if answer.status_code == 401:
            self._admin = None
        if not answer.ok:
            raise DashboardError(f"orders answered {answer.status_code} for its saga log", 502)
        return answer.json()["items"]

    def latest_trace(self) -> list[dict]:
        """The spans of the most recent trace that began at the gateway (a learner's request)."""
        lab, _ = self.current()
        spans = self._spans.read(lab.trace_file)
        roots = [span for span in spans if span.get("service") == "gateway"
                 and span.get("kind") == "server" and span.get("parent_id") is None
                 and str((span.get("attributes") or {}).get("http.target", "")).startswith("/api/")]
        if not roots:
            return []
        trace_id = max(roots, key=lambda span: span["end_ns"])["trace_id"]
        return [span for span in spans if span["trace_id"] == trace_id]

    # -- changing it -----------------------------------------------------------------------
    def _edge(self, lab: Lab, name: str) -> str:
        try:
            return lab.topology.edge(name).name
        except KeyError:
            known = ", ".join(edge.name for edge in lab.topology.edges()
                              if edge.callee in lab.topology.services)
            raise DashboardError(f"there is no edge called {name!r}; the HTTP edges are "
                                 f"{known}", status=404) from None

    def _chaos(self, lab: Lab) -> ChaosClient:
        if "chaos" not in lab.urls:
            raise DashboardError("this sandbox runs without chaos proxies (--no-chaos)", 409)
        return lab.chaos

    def slow(self, name: str, latency: Any, jitter: Any) -> str:
        lab, _ = self.current()
        edge = self._edge(lab, name)
        latency_ms = whole_number(latency, "latency (ms)", MAX_LATENCY_MS)
        jitter_ms = whole_number(jitter if jitter not in (None, "") else 0, "jitter (ms)",
                                 MAX_LATENCY_MS)
        self._chaos_call(lambda: self._chaos(lab).add_latency(edge, latency_ms, jitter_ms))
        return f"{edge}: +{latency_ms} ms (jitter {jitter_ms} ms)"

    def cut(self, name: str) -> str:
        lab, _ = self.current()
        edge = self._edge(lab, name)
        self._chaos_call(lambda: self._chaos(lab).cut(edge))
        return f"{edge} is cut: connections are refused"

    def restore(self, name: str) -> str:
        lab, _ = self.current()
        edge = self._edge(lab, name)
        chaos = self._chaos(lab)
        self._chaos_call(lambda: (chaos.restore(edge), chaos.remove_toxics(edge)))
        return f"{edge} is back to normal"

    @staticmethod
    def _chaos_call(action: Any) -> None:
        try:
            action()
        except requests.RequestException as error:
            raise DashboardError(f"the chaos proxy {reason(error)}", 503) from None
        except ChaosError as error:
            raise DashboardError(f"the chaos proxy refused: {error}", 502) from None

    def check(self) -> dict[str, Any]:
        """`microlab check`'s verdict over this sandbox's data, as JSON and as its text."""
        from pika.exceptions import AMQPError
        from pymongo.errors import PyMongoError

        from microlab.checker import check, read_snapshot

        lab, _ = self.current()
        state = RunDir(lab.run_dir or DEFAULT_RUN_DIR).read_state()
        if not state:
            raise DashboardError("no state file for this sandbox: run `microlab check` "
                                 "where it was started", 409)
        try:
            report = check(read_snapshot(state))
        except (PyMongoError, AMQPError) as error:
            raise DashboardError(f"cannot read the sandbox's data: {error}", 503) from None
        return {**report.as_json(), "text": report.text()}

    def place_orders(self, count: Any) -> list[dict[str, Any]]:
        """Place `count` (1..20) one-unit orders, one after the other, as the demo customer."""
        number = whole_number(count, "the number of orders", MAX_ORDERS)
        if number < 1:
            raise DashboardError("place at least 1 order")
        lab, _ = self.current()
        customer = self.demo_customer(lab)
        try:
            product = lab.in_stock(minimum=number)
        except requests.RequestException as error:
            raise DashboardError(f"no product to order: the gateway {reason(error)}", 503) from None
        except LookupError as error:
            raise DashboardError(f"no product to order: {error}", 503) from None
        results = []
        for _ in range(number):
            began = time.monotonic()
            try:  # as a careful client: a lost answer is asked again with the same key
                answer, _ = place_order(customer, lab.gateway,
                                        [{"product_id": product["id"], "quantity": 1}],
                                        timeout=ORDER_TIMEOUT_S)
                status, body = answer.status_code, _json_or_text(answer)
            except requests.RequestException as error:
                status, body = 0, {"error": {"message": f"the gateway {reason(error)}"}}
            results.append({"status": status, "ms": round((time.monotonic() - began) * 1000),
                            "order": body.get("id") if status < 300 else None,
                            "order_status": body.get("status"),
                            "message": _message(body) if status >= 300 or not status else ""})
        return results

    def session(self) -> dict[str, Any]:
        """The demo customer's token and the gateway, for the page's Socket.IO feed."""
        lab, identity = self.current()
        customer = self.demo_customer(lab)
        return {"gateway": lab.gateway, "identity": identity,
                "token": customer.headers["Authorization"].removeprefix("Bearer "),
                "user": customer.user}  # type: ignore[attr-defined]

    def relay_socket_io(self, method: str, query: str, body: bytes,
                        content_type: str | None) -> tuple[int, bytes, str]:
        """One Engine.IO long-polling request, passed to the gateway's /socket.io/ as it is."""
        lab, _ = self.current()
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            answer = requests.request(method, f"{lab.gateway}/socket.io/?{query}", data=body,
                                      headers=headers, timeout=SOCKET_POLL_TIMEOUT_S)
        except requests.RequestException as error:
            raise DashboardError(f"the gateway {reason(error)}", 502) from None
        return (answer.status_code, answer.content,
                answer.headers.get("Content-Type", "text/plain; charset=UTF-8"))

    # -- people ----------------------------------------------------------------------------
    def _admin_session(self, lab: Lab) -> requests.Session:
        with self._lock:
            if self._admin is None:
                try:
                    self._admin = admin_session(lab.gateway, timeout=5)
                except requests.RequestException as error:
                    raise DashboardError(f"cannot log in as the admin: the gateway at "
                                         f"{lab.gateway} {reason(error)}", 503) from None
            return self._admin

    def demo_customer(self, lab: Lab) -> requests.Session:
        with self._lock:
            if self._demo is None:
                try:
                    self._demo = lab.customer("Demo")
                except requests.RequestException as error:
                    raise DashboardError(f"cannot register the demo customer: the gateway "
                                         f"at {lab.gateway} {reason(error)}", 503) from None
            return self._demo


def reason(error: requests.RequestException) -> str:
    """Why a request failed, in a few words (urllib3's own message is a paragraph)."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"answered {error.response.status_code}"
    if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.Timeout):
        return "does not answer (connection refused: is the sandbox running? `make up`)"
    if isinstance(error, requests.Timeout):
        return "did not answer in time"
    return f"failed ({type(error).__name__})"


def _json_or_text(answer: requests.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {"error": {"message": answer.text[:200]}}
    return body if isinstance(body, dict) else {"value": body}


def _message(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "")
    return str(error or "")


class TransitionLog:
    """Every breaker transition seen in the services' snapshots, once each, newest first.

    Each snapshot lists a breaker's last transitions numbered from 1 with how long ago they
    happened; a number seen before is skipped. A breaker whose numbers go back was created
    again (its service restarted), so what was seen of it is forgotten.
    """

    def __init__(self, kept: int = 200) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=kept)
        self._lock = threading.Lock()

    def update(self, breakers: dict[str, dict], now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        with self._lock:
            for service, snapshots in breakers.items():
                for name, snapshot in snapshots.items():
                    listed = snapshot.get("transitions") or []
                    key = (service, name)
                    numbers = [t["number"] for t in listed]
                    if numbers and max(numbers) < self._seen.get(key, 0):
                        self._seen[key] = 0
                    for transition in listed:
                        if transition["number"] <= self._seen.get(key, 0):
                            continue
                        self._seen[key] = transition["number"]
                        self.events.appendleft({
                            "service": service, "breaker": name,
                            "from": transition["from"], "to": transition["to"],
                            "at": round(now - transition["seconds_ago"], 3)})
            return sorted(self.events, key=lambda event: -event["at"])

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self.events.clear()

"""The floor under an order's CPU: what its operations cost with the bare libraries, nothing else.

    python -m bench.floor_bench [--sandbox reports/bench-sandbox.json]
                                [--out reports/bench-floor.md] [--rounds 2000]

An order in the sandbox makes a fixed set of operations, which `bench.sandbox_bench` counts in
its 8-clients level: MongoDB operations (the embedded server's `serverStatus` opcounters: every
saga step logged before it acts, every outbox write, every idempotency record), HTTP calls
between services (client spans) and requests served (server spans), messages published with
publisher confirms and messages delivered and acked (RabbitMQ spans). Each of those costs some
CPU however little code runs around it. This benchmark measures that cost on this machine, with
the same libraries and the same path as the sandbox but no application code, no tracing, no
log line, no JSON Schema, no JWT:

- a MongoDB operation: pymongo against the embedded server (`microlab.mongo_server`), a mix of
  the shapes a saga step makes (insert, find by `_id`, conditional update, find-and-modify);
- an HTTP call: urllib3 keep-alive POST of a small JSON body, and a Flask view answering it
  under gunicorn gthread (the way `patterns.serve` runs a service);
- a message: pika publish of a persistent message with publisher confirms, and its delivery
  to a consumer that acks it. RabbitMQ's own CPU is not counted, as in the sandbox's table;

every one through the chaos proxy, as every hop of the sandbox is. Client, server and proxy
CPU are read per process (psutil) around each series and divided by its operations.

Multiplied by the counts, the unit costs give the floor: the CPU an order would cost if our
code, tracing and logs were free. The sandbox's measured CPU per order minus the floor is what
everything else costs. A target below the floor cannot be met without making fewer operations
per order, which is a change of design, not of tuning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import pika
import psutil
import urllib3
from flask import Flask, jsonify, request
from pymongo import MongoClient, ReturnDocument

from bench.proxy_bench import create_proxy, running_proxy_server
from bench.sandbox_bench import TARGETS, cpu_seconds, cpu_used, headline_level
from microlab.embedded_mongo import running_mongo
from microlab.lab import wait_until
from microlab.topology import LOOPBACK, free_ports

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ORDER_LINE = {"order_id": "o-1", "items": [{"product_id": "p-1", "quantity": 1}]}
TARGET_MS = next(target.limit for target in TARGETS if target.figure == "cpu_ms_per_order")

# What an order makes, as sandbox_bench counts it (ops_per_order), and what each costs here.
OPERATIONS = (
    # (count key, unit key, label)
    ("mongo_ops", "mongo_op", "MongoDB operations (opcounters)"),
    ("http_calls", "http_call", "HTTP calls made between services (client spans)"),
    ("http_served", "http_served", "HTTP requests served (server spans)"),
    ("publishes", "publish", "messages published with confirms (producer spans)"),
    ("deliveries", "delivery", "messages delivered and acked (consumer spans)"),
)


def progress(message: str) -> None:
    print(f"[floor_bench] {message}", file=sys.stderr, flush=True)


def bare_app() -> Flask:
    """The HTTP server of the floor: a view that reads a JSON body and answers one."""
    app = Flask("floor")

    @app.post("/reservations")
    def reserve():  # type: ignore[no-untyped-def]
        body = request.get_json()
        return jsonify({"id": "r-1", "status": "held", "items": body["items"]}), 201

    return app


# Processes measured


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _listening(port: int) -> int:
    """The pid of the process listening on `port` (of a gunicorn, its master: the worker
    listens on the same socket), whatever else runs on the machine (a sandbox of its own)."""
    pids = {connection.pid for connection in psutil.net_connections("tcp")
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
            and connection.pid}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).ppid() not in pids:
                return pid
    raise RuntimeError(f"no process listens on port {port}")


def per_operation(series: Callable[[], int], pids: dict[str, int]) -> dict[str, float]:
    """Run `series` (it returns how many operations it made); the CPU ms per operation of this
    process ("client") and of each process in `pids`, each with its descendants."""
    before, client_before = cpu_seconds(pids), _own_cpu()
    operations = series()
    client = _own_cpu() - client_before
    used = cpu_used(before, cpu_seconds(pids))
    return {"client": 1000 * client / operations,
            **{name: 1000 * seconds / operations for name, seconds in used.items()}}


@contextlib.contextmanager
def gunicorn_server() -> Iterator[int]:
    """`bare_app` under gunicorn gthread, one worker, as a service runs; yields its port."""
    port = free_ports(1)[0]
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "1",
                               "--worker-class", "gthread", "--threads", "8",
                               "--bind", f"{LOOPBACK}:{port}", "bench.floor_bench:bare_app()"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pool = urllib3.HTTPConnectionPool(LOOPBACK, port, retries=False)

        def answers() -> bool:
            try:
                return pool.request("POST", "/reservations", json=ORDER_LINE).status == 201
            except urllib3.exceptions.HTTPError:
                return False

        wait_until(answers, timeout=20, every=0.1, what="gunicorn answers")
        yield port
    finally:
        server.terminate()
        server.wait(10)


# The three unit costs


def mongo_operation(proxy_url: str, proxy: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="floor-mongo-") as data, \
            running_mongo(Path(data)) as url:
        upstream = urllib3.util.parse_url(url).port
        port = create_proxy(proxy_url, "floor-mongo", upstream)
        with MongoClient(LOOPBACK, port) as client:
            orders = client.floor.orders
            orders.insert_one({"_id": "warm-up"})

            def series() -> int:
                steps = rounds // 4
                for number in range(steps):
                    key = f"o-{number}"
                    orders.insert_one({"_id": key, "status": "pending", **ORDER_LINE})
                    orders.find_one({"_id": key})
                    orders.update_one({"_id": key, "status": "pending"},
                                      {"$set": {"status": "reserved"}})
                    orders.find_one_and_update({"_id": key, "status": "reserved"},
                                               {"$set": {"status": "confirmed"}},
                                               return_document=ReturnDocument.AFTER)
                return 4 * steps

            return per_operation(series, {"server": _listening(upstream), "proxy": proxy})


def http_call(proxy_url: str, proxy: int, rounds: int) -> dict[str, float]:
    with gunicorn_server() as upstream:
        port = create_proxy(proxy_url, "floor-http", upstream)
        pool = urllib3.HTTPConnectionPool(LOOPBACK, port, maxsize=1)

        def series() -> int:
            for _ in range(rounds):
                answer = pool.request("POST", "/reservations", json=ORDER_LINE,
                                      headers={"Idempotency-Key": "k-1"})
                json.loads(answer.data)
            return rounds

        return per_operation(series, {"server": _listening(upstream), "proxy": proxy})


def _consume(url: str, queue: str, expected: int, pipe: Connection) -> None:
    """A consumer in a process of its own: connects, says so, waits for the word, acks
    `expected` messages, says so, and waits to be told to exit."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=10)
    received = 0

    def on_message(channel, method, properties, body) -> None:  # type: ignore[no-untyped-def]
        nonlocal received
        json.loads(body)
        channel.basic_ack(method.delivery_tag)
        received += 1
        if received == expected:
            channel.stop_consuming()

    pipe.send("ready")
    pipe.recv()
    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    pipe.send("done")
    pipe.recv()
    connection.close()


def message(proxy_url: str, proxy: int, rounds: int) -> dict[str, dict[str, float]]:
    """Publishing (this process) and delivering (a consumer process), through one proxy: all
    the messages are published first, then consumed, so each side is measured on its own."""
    broker = urllib3.util.parse_url(AMQP_URL)
    port = create_proxy(proxy_url, "floor-amqp", broker.port or 5672)
    url = f"amqp://{broker.auth or 'guest:guest'}@{LOOPBACK}:{port}/%2F"
    queue = f"floor-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.confirm_delivery()
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    consumer = spawn.Process(target=_consume, args=(url, queue, rounds, theirs), daemon=True)
    consumer.start()
    try:
        if not ours.poll(30):
            raise RuntimeError("the consumer did not connect")
        ours.recv()
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                          message_id="m-1", headers={"X-Request-Id": "r-1"})
        body = json.dumps(ORDER_LINE).encode()

        def publish() -> int:
            for _ in range(rounds):
                channel.basic_publish("", queue, body, properties, mandatory=True)
            return rounds

        def deliver() -> int:
            ours.send("go")
            if not ours.poll(60):
                raise RuntimeError("the consumer did not get every message")
            ours.recv()
            return rounds

        published = per_operation(publish, {"proxy": proxy})
        delivered = per_operation(deliver, {"consumer": consumer.pid, "proxy": proxy})
        return {"publish": published,
                "delivery": {"client": delivered["consumer"], "proxy": delivered["proxy"]}}
    finally:
        ours.send("exit")
        consumer.join(10)
        channel.queue_delete(queue)
        connection.close()


def measure_unit_costs(rounds: int) -> dict[str, dict[str, float]]:
    """CPU ms per operation, by process, of each kind of operation an order makes."""
    with running_proxy_server() as proxy_url:
        proxy = _listening(urllib3.util.parse_url(proxy_url).port)  # the pid its CPU is read from
        progress(f"floor: {rounds} MongoDB operations")
        mongo = mongo_operation(proxy_url, proxy, rounds)
        progress(f"floor: {rounds} HTTP calls")
        http = http_call(proxy_url, proxy, rounds)
        progress(f"floor: {rounds} messages")
        messages = message(proxy_url, proxy, rounds)
    return {"mongo_op": mongo,
            "http_call": {"client": http["client"], "proxy": http["proxy"]},
            "http_served": {"server": http["server"]},
            **messages}


# The floor


def floor(per_order: dict[str, float], units: dict[str, dict[str, float]]) -> list[dict]:
    """One row per kind of operation: how many an order makes, the bare CPU of one (all
    processes), and their product in ms per order."""
    rows = []
    for count, unit, label in OPERATIONS:
        each = sum(units[unit].values())
        rows.append({"label": label, "per_order": per_order[count], "unit_ms": each,
                     "parts": units[unit], "ms": per_order[count] * each})
    return rows


def plot(rows: list[dict], measured: float, path: Path) -> str | None:
    """A PNG of one bar: the floor kind by kind, then the rest of the measured CPU, against
    the target; if matplotlib is there."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(9, 3.2))
    left = 0.0
    for row in rows:
        axes.barh(0, row["ms"], left=left, label=row["label"].split(" (")[0])
        left += row["ms"]
    axes.barh(0, measured - left, left=left, color="lightgrey",
              label="everything else: our code, tracing, logs")
    axes.axvline(TARGET_MS, color="black", linestyle="--", label=f"target ≤ {TARGET_MS:g} ms")
    axes.set(xlabel="CPU ms per confirmed order", yticks=[],
             title="The floor under an order's CPU, and the rest")
    figure.legend(loc="lower center", ncol=3, fontsize="small")
    figure.subplots_adjust(left=0.03, right=0.97, top=0.88, bottom=0.42)
    figure.savefig(path)
    plt.close(figure)
    return path.name


def render(rows: list[dict], sandbox: dict, source: str, machine: dict, rounds: int,
           image: str | None = None) -> str:
    total = sum(row["ms"] for row in rows)
    measured = sandbox["figures"]["cpu_ms_per_order"]
    target = TARGET_MS
    lines = [
        "# The floor under an order's CPU",
        "",
        f"Run {machine['date']} on {platform.node()}: {machine['cpus']} CPUs, Python "
        f"{machine['python']}; `python -m bench.floor_bench --rounds {rounds}`. Operations per "
        f"order counted by the sandbox benchmark of {sandbox['date']} (`{source}`).",
        "",
        "| operation | per order | bare CPU of one, ms | parts, ms | ms per order |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        parts = ", ".join(f"{name} {ms:.3f}" for name, ms in row["parts"].items())
        lines.append(f"| {row['label']} | {row['per_order']:.1f} | {row['unit_ms']:.3f} "
                     f"| {parts} | {row['ms']:.1f} |")
    lines += [
        f"| **floor** | | | | **{total:.1f}** |",
        "",
        f"An order cost **{measured:.1f} ms** of CPU in that sandbox run; its operations alone, "
        f"made with the bare libraries, cost **{total:.1f} ms** ({100 * total / measured:.0f} %"
        f"). The other {measured - total:.1f} ms are everything the floor leaves out: our "
        "handlers and stores, the saga and outbox logic, JSON Schema checks, JWTs, tracing and "
        "the structured logs. Against the target of ≤ "
        f"{target:g} ms: " + (
            "the floor alone is above it, so no tuning of our code can meet it; only fewer "
            "operations per order can." if total > target else
            f"the floor leaves {target - total:.1f} ms for all of that."),
        "",
        "Bare CPU is measured here in the same way the sandbox's is (user + system time per "
        "process, psutil), client, server and chaos proxy each, around a series of "
        f"{rounds} operations; RabbitMQ's own CPU is counted in neither. The MongoDB series "
        "works on a small collection and the HTTP view does nothing but echo: both are lower "
        "bounds of what the sandbox's operations can cost.",
        "",
    ]
    if image:
        lines += [f"![the floor and the rest of an order's CPU]({image})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", type=Path, default=ROOT / "reports" / "bench-sandbox.json",
                        help="the raw numbers of a sandbox benchmark run, for the counts")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-floor.md")
    parser.add_argument("--rounds", type=int, default=2000, help="operations per series")
    args = parser.parse_args(argv)
    try:
        sandbox = json.loads(args.sandbox.read_text())
        per_order = headline_level(sandbox["results"])["ops_per_order"]
    except (OSError, ValueError, KeyError, StopIteration):
        parser.exit(2, f"{args.sandbox}: no operation counts to read; run "
                       "`python -m bench.sandbox_bench` first\n")
    machine = {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}", "cpus": os.cpu_count(),
               "python": platform.python_version()}
    units = measure_unit_costs(args.rounds)
    rows = floor(per_order, units)
    image = plot(rows, sandbox["figures"]["cpu_ms_per_order"], args.out.with_suffix(".png"))
    report = render(rows, sandbox, str(args.sandbox), machine, args.rounds, image)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"date": machine["date"], "units": units, "per_order": per_order, "rows": rows},
        indent=2))
    print(report)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

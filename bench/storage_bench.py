"""How fast and how big the embedded MongoDB (nx-27017) is, used the way the services use it.

Run from the repository root:

    .venv/bin/python -m bench.storage_bench [--ops 2000] [--seconds 10] \
        [--report reports/bench-storage.md]

It starts its own server on a free loopback port in a temporary directory (and stops it), and
measures:

- startup: from launching the process to the first answered `ping` (median of a few starts);
- the server's resident memory (VmRSS from /proc) when idle and after the workload;
- per-operation latency (p50/p95) of insert_one, find_one by _id and by a unique field, a
  conditional find_one_and_update by _id and an update_one by a unique field, each bounded by
  --ops and --seconds;
- the atomic reservation race: 2 processes x 200 single-unit reservations against 300 units.

Numbers go to stdout, and to a Markdown file with --report. Precise figures belong here, not in
tests: on a shared 2-core machine they vary from run to run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from pymongo import MongoClient, ReturnDocument
from pymongo.errors import PyMongoError

from microlab.embedded_mongo import mongo_command
from microlab.topology import LOOPBACK, free_ports


@dataclass
class Server:
    """A server this benchmark started, and how long it took to answer."""

    process: subprocess.Popen[bytes]
    url: str
    startup_seconds: float

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(data_dir: Path, timeout: float = 15.0) -> Server:
    """Launch nx-27017 and time how long it takes to answer its first ping."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    url = f"mongodb://{LOOPBACK}:{port}/"
    started = time.perf_counter()
    process = subprocess.Popen(mongo_command(data_dir, port), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=int(timeout * 1000),
                                      connectTimeoutMS=200)
    try:
        client.admin.command("ping")
    except PyMongoError:
        process.kill()
        process.wait()
        raise
    finally:
        client.close()
    return Server(process, url, time.perf_counter() - started)


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def time_operation(operation: Callable[[int], Any], ops: int, seconds: float) -> list[float]:
    """Run operation(i) for i = 0.. until `ops` runs or `seconds` pass; return latencies in ms."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    for i in range(ops):
        begin = time.perf_counter()
        operation(i)
        end = time.perf_counter()
        latencies.append((end - begin) * 1000)
        if end > deadline:
            break
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _reserve_units(url: str, database: str, attempts: int, start: Barrier,
                   results: multiprocessing.Queue) -> None:
    client: MongoClient = MongoClient(url)
    stock = client[database]["stock"]
    client.admin.command("ping")
    start.wait()
    won = 0
    for _ in range(attempts):
        if stock.find_one_and_update({"_id": "sku-1", "available": {"$gte": 1}},
                                     {"$inc": {"available": -1, "reserved": 1}}) is not None:
            won += 1
    client.close()
    results.put(won)


def reservation_race(url: str, units: int = 300, workers: int = 2,
                     attempts: int = 200) -> dict[str, Any]:
    """Let `workers` processes race to reserve single units; report who won what and what's left."""
    database = "bench_race"
    with MongoClient(url) as client:
        client.drop_database(database)
        client[database]["stock"].insert_one({"_id": "sku-1", "available": units, "reserved": 0})
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(workers + 1)
        results: multiprocessing.Queue = context.Queue()
        processes = [context.Process(target=_reserve_units,
                                     args=(url, database, attempts, start, results))
                     for _ in range(workers)]
        for process in processes:
            process.start()
        start.wait(timeout=30)
        began = time.perf_counter()
        wins = sorted(results.get(timeout=120) for _ in processes)
        elapsed = time.perf_counter() - began
        for process in processes:
            process.join()
        final = client[database]["stock"].find_one({"_id": "sku-1"})
        client.drop_database(database)
    return {"units": units, "attempts": workers * attempts, "succeeded": sum(wins),
            "per_process": wins, "available": final["available"], "reserved": final["reserved"],
            "seconds": elapsed}


def measure_latencies(url: str, ops: int, seconds: float) -> dict[str, list[float]]:
    """p50/p95 material for the operations every request of a service makes."""
    with MongoClient(url) as client:
        products = client["bench_latency"]["products"]
        products.drop()
        products.create_index("sku", unique=True)
        for i in range(100):  # warm-up: connection pool, SQLite pages, code paths
            products.insert_one({"sku": f"warm-{i}", "price": i})
            products.find_one({"sku": f"warm-{i}"})
        ids: list[Any] = []

        def insert(i: int) -> None:
            ids.append(products.insert_one({"sku": f"sku-{i}", "name": f"Product {i}",
                                            "price": 100 + i, "stock": 1000,
                                            "tags": ["bench"]}).inserted_id)

        results = {"insert_one": time_operation(insert, ops, seconds)}
        results["find_one by _id"] = time_operation(
            lambda i: products.find_one({"_id": ids[i % len(ids)]}), ops, seconds)
        results["find_one by unique sku"] = time_operation(
            lambda i: products.find_one({"sku": f"sku-{i % len(ids)}"}), ops, seconds)
        results["find_one_and_update by _id (reserve)"] = time_operation(
            lambda i: products.find_one_and_update(
                {"_id": ids[i % len(ids)], "stock": {"$gte": 1}}, {"$inc": {"stock": -1}},
                return_document=ReturnDocument.AFTER), ops, seconds)
        # nx-27017 scans the collection for updates filtered on anything but _id, indexed or
        # not: the cost depends on where the document sits, so time the last one.
        last_sku = f"sku-{len(ids) - 1}"
        results[f"update_one by unique sku, last of {len(ids)}"] = time_operation(
            lambda i: products.update_one({"sku": last_sku, "stock": {"$gte": 1}},
                                          {"$inc": {"stock": -1}}), min(ops, 200), seconds)
        client.drop_database("bench_latency")
    return results


def render(startups: list[float], rss_idle: float, rss_loaded: float,
           latencies: dict[str, list[float]], race: dict[str, Any]) -> str:
    load1, _, _ = os.getloadavg()
    lines = [
        "# Embedded MongoDB benchmark (nx-27017, pymongo over loopback)",
        "",
        f"Machine: {os.cpu_count()} CPUs, load average {load1:.2f} at the end; "
        f"Python {sys.version.split()[0]}.",
        "",
        f"- startup to first ping: median {statistics.median(startups):.2f} s "
        f"(runs: {', '.join(f'{s:.2f}' for s in startups)})",
        f"- server RSS: {rss_idle:.0f} MiB idle after start, {rss_loaded:.0f} MiB after the "
        "workload",
        "",
        "| operation | n | p50 ms | p95 ms |",
        "|---|---|---|---|",
    ]
    for name, values in latencies.items():
        lines.append(f"| {name} | {len(values)} | {percentile(values, 0.5):.2f} | "
                     f"{percentile(values, 0.95):.2f} |")
    oversold = race["succeeded"] > race["units"] or race["available"] < 0
    lines += [
        "",
        f"Reservation race: {len(race['per_process'])} processes x "
        f"{race['attempts'] // len(race['per_process'])} attempts against {race['units']} units: "
        f"{race['succeeded']} succeeded (per process {race['per_process']}), "
        f"available {race['available']}, reserved {race['reserved']}, "
        f"{'OVERSOLD' if oversold else 'no oversell'}, {race['seconds']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="operations per measurement")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="time budget per measurement")
    parser.add_argument("--starts", type=int, default=3, help="server starts to time")
    parser.add_argument("--report", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="storage-bench-") as scratch:
        startups: list[float] = []
        for run in range(args.starts - 1):
            server = start_server(Path(scratch) / f"start-{run}")
            startups.append(server.startup_seconds)
            server.stop()
        server = start_server(Path(scratch) / "data")
        startups.append(server.startup_seconds)
        try:
            time.sleep(0.5)  # let the process settle before reading its RSS
            rss_idle = rss_mib(server.process.pid)
            latencies = measure_latencies(server.url, args.ops, args.seconds)
            race = reservation_race(server.url)
            rss_loaded = rss_mib(server.process.pid)
        finally:
            server.stop()

    text = render(startups, rss_idle, rss_loaded, latencies, race)
    print(text, end="")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

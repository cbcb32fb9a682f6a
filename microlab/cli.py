"""`microlab`: run and inspect the sandbox.

    microlab up [--free-ports | --port-offset N] [--fresh] [--quiet] [--restart on-failure]
    microlab down
    microlab status [--json]
    microlab logs SERVICE [-f] [-n LINES]
    microlab stop|start|restart SERVICE     (a service, or the infrastructure: mongo, chaos)
    microlab chaos list | latency EDGE MS [--jitter MS] | down EDGE | up EDGE | reset
    microlab check [--json]

Edges are named caller->callee, e.g. 'orders->payments' (quote it: the shell reads `>`),
or orders:payments without quotes.

Every command takes --run-dir (default .microlab/ in the project, or MICROLAB_RUN_DIR), so
several sandboxes can run side by side, each with its own ports, logs and data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import requests
from pika.exceptions import AMQPError
from pymongo.errors import PyMongoError

from microlab.chaos import ChaosClient, ChaosError
from microlab.checker import check, read_snapshot
from microlab.console import LogPrinter, table
from microlab.compose import compose_state
from microlab.dlq import DeadLetters
from microlab.processes import ROOT
from microlab.supervisor import (Interrupted, PreflightError, RunDir, StartupError, Supervisor,
                                 supervisor_alive)
from microlab.topology import DEFAULT_AMQP_URL, load_topology, plan_ports

NOT_RUNNING = "the sandbox is not running (start it with `make up`)"


def _run_dir(args: argparse.Namespace) -> RunDir:
    return RunDir(Path(args.run_dir).resolve())


def _state_or_exit(run_dir: RunDir) -> dict:
    state = run_dir.read_state()
    if not supervisor_alive(state):
        raise SystemExit(NOT_RUNNING)
    return state


def default_namespace(run_dir: Path) -> str:
    """A sandbox's own prefix on the broker, the same every time it starts from this run dir
    (its durable queues and their events are still there after a restart) and different for
    every other run dir: two sandboxes on one broker never consume each other's events."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"ml-{digest}"


def cmd_up(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args)
    state = run_dir.read_state()
    if supervisor_alive(state):
        print(f"a sandbox is already running from {run_dir.path} (supervisor pid "
              f"{state['supervisor_pid']}); `microlab down` stops it", file=sys.stderr)
        return 1
    topology = load_topology()
    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    try:
        plan = plan_ports(topology, offset=args.port_offset, free=args.free_ports,
                          amqp_url=amqp_url)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    names = ["mongo", "chaos", *topology.services, "dashboard"]
    printer = None if args.quiet else LogPrinter(names, colour=None if args.colour else False)
    namespace = default_namespace(run_dir.path) if args.namespace is None else args.namespace
    supervisor = Supervisor(topology, plan, run_dir, amqp_url=amqp_url, chaos=args.chaos,
                            namespace=namespace, restart_services=args.restart == "on-failure",
                            on_line=printer)
    supervisor.install_signal_handlers()
    try:
        seconds = supervisor.start(fresh=args.fresh)
        _print_banner(supervisor, seconds)
        supervisor.serve_forever()
        print("microlab: stopping every service...", flush=True)
        return 0
    except PreflightError as error:
        print(f"microlab: cannot start: {error}", file=sys.stderr)
        return error.exit_code
    except StartupError as error:
        print(f"microlab: startup failed: {error}", file=sys.stderr)
        return 1
    except Interrupted:
        print("microlab: interrupted while starting", file=sys.stderr)
        return 130
    finally:
        supervisor.shutdown()
        print("microlab: stopped", flush=True)


def _print_banner(supervisor: Supervisor, seconds: float) -> None:
    urls = supervisor.urls()
    width = max(len(name) for name in urls)
    lines = [f"Microservices Lab is up in {seconds:.1f} s. Try: curl {urls['gateway']}/health", ""]
    lines += [f"  {name:<{width}}  {url}" for name, url in urls.items()]
    lines += ["", "Ctrl-C stops everything. From another terminal: "
              ".venv/bin/python -m microlab status | logs SERVICE | down", ""]
    print("\n".join(lines), flush=True)


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args)
    state = run_dir.read_state()
    if not supervisor_alive(state):
        run_dir.state_file.unlink(missing_ok=True)
        print(NOT_RUNNING)
        return 0
    pid = state["supervisor_pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and supervisor_alive(state):
        time.sleep(0.1)
    if supervisor_alive(state):
        # It did not stop in time: take the whole sandbox down by force.
        for child_pid in [pid, *state.get("pids", {}).values()]:
            try:
                os.killpg(child_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        os.kill(pid, signal.SIGKILL)
        run_dir.state_file.unlink(missing_ok=True)
        print(f"microlab: supervisor {pid} did not stop in {args.timeout:.0f}s; killed")
        return 1
    print("microlab: stopped")
    return 0


def _human_bytes(count: int) -> str:
    return f"{count / 2**20:.0f} MB"


def cmd_status(args: argparse.Namespace) -> int:
    state = _state_or_exit(_run_dir(args))
    status = requests.get(f"{state['control_url']}/status", timeout=30).json()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    rows = [{**row, "uptime": "-" if row["uptime_s"] is None else f"{row['uptime_s']:.0f}s",
             "memory": _human_bytes(row["pss_bytes"]) if row["pss_bytes"] else "-",
             "pid": row["pid"] or "-", "port": row["port"] or "-"}
            for row in status["services"]]
    print(table(rows, ["service", "pid", "port", "state", "health", "uptime", "memory"]))
    startup = status["startup_s"]
    print(f"\nstartup: {startup:.1f} s    total memory (PSS): "
          f"{_human_bytes(status['total_pss_bytes'])}" if startup is not None else
          "\nstill starting...")
    unhealthy = [row["service"] for row in status["services"] if row["health"] != "ok"]
    return 1 if unhealthy else 0


def cmd_logs(args: argparse.Namespace) -> int:
    log_file = _run_dir(args).log_file(args.service)
    if not log_file.exists():
        print(f"no log for {args.service!r} in {log_file.parent}", file=sys.stderr)
        return 1
    with open(log_file) as log:
        for line in log.readlines()[-args.lines:]:
            print(line, end="")
        while args.follow:
            line = log.readline()
            if line:
                print(line, end="", flush=True)
            else:
                time.sleep(0.2)
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    state = _state_or_exit(_run_dir(args))
    response = requests.post(f"{state['control_url']}/services/{args.service}/{args.command}",
                             timeout=120)
    body = response.json()
    if response.status_code != 200:
        print(f"microlab: {body['error']}", file=sys.stderr)
        return 1
    print(f"{args.service}: {body['state']} (health {body['health']})")
    return 0


def _target_state(args: argparse.Namespace) -> dict:
    """The running sandbox's state, or the compose stack's addresses with --compose."""
    return compose_state() if args.compose else _state_or_exit(_run_dir(args))


def cmd_chaos(args: argparse.Namespace) -> int:
    state = _target_state(args)
    if "chaos" not in state["urls"]:
        print("microlab: this sandbox runs without chaos proxies (--no-chaos)", file=sys.stderr)
        return 1
    client = ChaosClient(state["urls"]["chaos"], load_topology())
    try:
        if args.chaos_command == "list":
            rows = [{"edge": edge.edge, "listen": edge.listen, "upstream": edge.upstream,
                     "state": "up" if edge.enabled else "DOWN",
                     "toxics": ", ".join(_describe_toxic(toxic) for toxic in edge.toxics)}
                    for edge in client.edges()]
            print(table(rows, ["edge", "listen", "upstream", "state", "toxics"]))
        elif args.chaos_command == "latency":
            stream = "upstream" if args.upstream else "downstream"
            client.add_latency(args.edge, args.ms, args.jitter, stream)
            print(f"{args.edge}: +{args.ms} ms (jitter {args.jitter} ms) {stream}")
        elif args.chaos_command == "down":
            client.cut(args.edge)
            print(f"{args.edge}: down")
        elif args.chaos_command == "up":
            client.restore(args.edge)
            print(f"{args.edge}: up")
        else:
            client.reset()
            print("every edge up, no toxics")
    except (KeyError, ChaosError) as error:
        print(f"microlab: {error.args[0]}", file=sys.stderr)
        return 1
    return 0


def _describe_toxic(toxic: dict) -> str:
    attributes = ",".join(f"{key}={value}" for key, value in toxic["attributes"].items())
    return f"{toxic['type']}({attributes}) {toxic['stream']}"


def cmd_check(args: argparse.Namespace) -> int:
    state = _target_state(args)
    try:
        report = check(read_snapshot(state))
    except (PyMongoError, AMQPError) as error:
        print(f"microlab: cannot read the sandbox's data: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_json(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


def cmd_dlq(args: argparse.Namespace) -> int:
    state = _target_state(args)
    letters = DeadLetters(state["amqp_url"], state["namespace"])
    try:
        if args.dlq_command == "list":
            rows = [{"queue": queue, "dead letters": count}
                    for queue, count in letters.counts().items()]
            print(table(rows, ["queue", "dead letters"]))
        elif args.dlq_command == "show":
            found = letters.show(args.queue)
            rows = [{"message": letter.message_id or "-", "event": letter.event,
                     "attempts": letter.attempts, "reason": letter.reason,
                     "error": letter.error[:80]} for letter in found]
            print(table(rows, ["message", "event", "attempts", "reason", "error"])
                  if rows else f"no dead letters in {args.queue}")
        elif args.dlq_command == "replay":
            print(f"{letters.replay(args.queue)} message(s) sent back to {args.queue}")
        else:
            print(f"{letters.purge(args.queue)} message(s) removed from {args.queue}.dead")
    except AMQPError as error:
        print(f"microlab: the broker refused: {error!r} (is {args.queue!r} a consumer queue? "
              "`microlab dlq list` names them)" if "queue" in args else
              f"microlab: cannot reach the broker: {error!r}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microlab", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=os.environ.get("MICROLAB_RUN_DIR",
                                                            str(ROOT / ".microlab")),
                        help="where state, logs and data live (default: %(default)s)")
    parser.add_argument("--compose", action="store_true",
                        help="chaos and check act on the `docker compose` stack instead "
                             "(its ports on 127.0.0.1; MICROLAB_MONGO_PORT, MICROLAB_AMQP_PORT)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the sandbox in the foreground")
    ports = up.add_mutually_exclusive_group()
    ports.add_argument("--free-ports", action="store_true",
                       help="let the OS choose every port (for tests and parallel runs)")
    ports.add_argument("--port-offset", type=int, default=0,
                       help="add N to every default port")
    up.add_argument("--fresh", action="store_true", help="start with empty databases")
    up.add_argument("--quiet", action="store_true", help="do not stream service logs")
    up.add_argument("--no-colour", dest="colour", action="store_false")
    up.add_argument("--namespace", default=os.environ.get("BUS_NAMESPACE"),
                    help="prefix for RabbitMQ exchanges and queues, so sandboxes sharing "
                         "a broker stay apart (default: one derived from the run dir; "
                         "'' for none)")
    up.add_argument("--restart", choices=["no", "on-failure"], default="no",
                    help="restart policy for services, as in compose: on-failure brings a "
                         "crashed service back with backoff (the embedded MongoDB and the "
                         "chaos proxy always are)")
    up.add_argument("--no-chaos", dest="chaos", action="store_false",
                    help="wire services straight to each other, without chaos proxies")
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="stop a sandbox started with `up`")
    down.add_argument("--timeout", type=float, default=30.0)
    down.set_defaults(handler=cmd_down)

    status = commands.add_parser("status", help="table of processes, health, uptime, memory")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    logs = commands.add_parser("logs", help="print a service's log (JSON lines)")
    logs.add_argument("service")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.set_defaults(handler=cmd_logs)

    for action in ("stop", "start", "restart"):
        lifecycle = commands.add_parser(
            action, help=f"{action} one service, or the embedded MongoDB (mongo) or the chaos "
                         "proxy (chaos)")
        lifecycle.add_argument("service")
        lifecycle.set_defaults(handler=cmd_lifecycle)

    chaos = commands.add_parser("chaos", help="slow down or cut an edge of the topology")
    chaos.set_defaults(handler=cmd_chaos)
    chaos_commands = chaos.add_subparsers(dest="chaos_command", required=True)
    chaos_commands.add_parser("list", help="every edge, its proxy and its toxics")
    latency = chaos_commands.add_parser("latency", help="add latency to an edge")
    latency.add_argument("edge")
    latency.add_argument("ms", type=int)
    latency.add_argument("--jitter", type=int, default=0, metavar="MS")
    latency.add_argument("--upstream", action="store_true",
                         help="delay requests instead of responses")
    for verb, text in (("down", "cut an edge: refuse and drop its connections"),
                       ("up", "bring an edge back")):
        edge_command = chaos_commands.add_parser(verb, help=text)
        edge_command.add_argument("edge")
    chaos_commands.add_parser("reset", help="every edge up, every toxic removed")

    dlq = commands.add_parser("dlq", help="dead-lettered events: list, show, replay, purge")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_commands.add_parser("list", help="every consumer queue's dead letters, counted")
    for verb, text in (("show", "the dead letters of a queue, left in place"),
                       ("replay", "send a queue's dead letters back to it"),
                       ("purge", "throw a queue's dead letters away")):
        dlq_command = dlq_commands.add_parser(verb, help=text)
        dlq_command.add_argument("queue", help="a consumer queue, e.g. email.events")
    dlq.set_defaults(handler=cmd_dlq)

    check_command = commands.add_parser(
        "check", help="check the invariants over every service's data (exit 1 on a violation)")
    check_command.add_argument("--json", action="store_true")
    check_command.set_defaults(handler=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except requests.RequestException as error:
        print(f"microlab: the supervisor did not answer: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""`make compose-test`: the real docker-compose.yml up under Podman, used as a learner would.

No Docker engine runs on our machines and no image can be pulled, so this harness:

1. installs Podman, runc, a compose tool and debootstrap from Debian's packages when missing;
2. builds a Debian base image with debootstrap (nothing pulled) and keeps it for later runs;
3. builds the project's image from the real Dockerfile, installing the Python packages offline
   from a wheelhouse that pip fills on this machine from requirements.txt;
4. swaps only the third-party images for stand-ins (compose/podman-ci.override.yml);
5. brings the stack up with docker-compose talking to Podman's Docker-compatible socket,
   drives the health checks itself (Podman here has no systemd to run them), and waits until
   every container is healthy; then, through 127.0.0.1 only: register, log in, browse, order,
   the Socket.IO push, the receipt email; `orders->payments` cut with toxiproxy-python (503
   naming the order, stock released, nothing charged), restored; `microlab check` clean; the
   `tools` profile: JupyterLab (a notebook run in its container) and Locust's web UI;
6. takes everything down (containers, network, volumes), also when a step fails, and prints how
   long each stage took.

    python -m tests.compose.stack [--keep]     # --keep: leave the stack up to look around
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import yaml  # noqa: E402

from microlab.compose import COMPOSE_FILE  # noqa: E402
from microlab.preflight import PreflightError, check_ports_free  # noqa: E402
from microlab.topology import PortPlan  # noqa: E402

PROJECT = "microlab-ci"
OVERRIDE = ROOT / "compose" / "podman-ci.override.yml"
STATE = Path("/var/lib/microlab-containers")
WHEELHOUSE = ROOT / "wheelhouse"
BASE_IMAGE = "localhost/debian:bookworm"
PYTHON_IMAGE = "docker.io/library/python:3.11-slim"  # the name the Dockerfile's FROM asks for
STAND_INS = {"localhost/microlab-rabbitmq:latest": "rabbitmq.Dockerfile",
             "localhost/microlab-redis:latest": "redis.Dockerfile"}
# The host's own RabbitMQ holds 5672 (and maybe 15672): the stack's go elsewhere.
STACK_ENV = {"MICROLAB_AMQP_PORT": "5673", "MICROLAB_RABBITMQ_UI_PORT": "15673",
             "MICROLAB_MONGO_PORT": "27018"}
# What each Debian package brings that we need, and where it lands.
PACKAGES = {"podman": "/usr/bin/podman", "runc": "/usr/sbin/runc",
            "netavark": "/usr/lib/podman/netavark", "aardvark-dns": "/usr/lib/podman/aardvark-dns",
            "slirp4netns": "/usr/bin/slirp4netns", "uidmap": "/usr/bin/newuidmap",
            "catatonit": "/usr/bin/catatonit", "iptables": "/usr/sbin/iptables",
            "fuse-overlayfs": "/usr/bin/fuse-overlayfs", "debootstrap": "/usr/sbin/debootstrap",
            "docker-compose": "/usr/bin/docker-compose"}


class StackError(Exception):
    """A stage failed; the message says what and how to fix it."""


class Stages:
    """Runs named stages, prints each as it starts and a table of durations at the end."""

    def __init__(self) -> None:
        self.durations: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        print(f"compose-test: {name} ...", flush=True)
        began = time.monotonic()
        try:
            yield
        finally:
            self.durations.append((name, time.monotonic() - began))

    def report(self) -> str:
        lines = [f"  {name:<34} {seconds:6.1f} s" for name, seconds in self.durations]
        total = sum(seconds for _, seconds in self.durations)
        return "\n".join(["compose-test: stages", *lines, f"  {'total':<34} {total:6.1f} s"])


def run(*command: str, check: bool = True, timeout: float = 900, quiet: bool = True,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=quiet, text=True, timeout=timeout,
                          env=kwargs.pop("env", podman_env()), **kwargs)
    if check and done.returncode != 0:
        output = ((done.stdout or "") + (done.stderr or "")).strip()[-3000:]
        raise StackError(f"`{' '.join(command[:4])} ...` exited with {done.returncode}:\n{output}")
    return done


def podman_env() -> dict[str, str]:
    return {**os.environ, **STACK_ENV, "CONTAINERS_CONF": str(STATE / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(ROOT / "compose" / "podman" / "storage.conf"),
            "DOCKER_HOST": f"unix://{STATE / 'podman.sock'}", "DOCKER_BUILDKIT": "0",
            "COMPOSE_INTERACTIVE_NO_CLI": "1"}


# -- 1. tools -----------------------------------------------------------------------------------
def install_tools() -> None:
    missing = [package for package, path in PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(f"missing {', '.join(missing)} and no way to install them here "
                         "(needs root and apt-get): install Podman and docker-compose, then "
                         "run again")
    print(f"compose-test: installing {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)


def configure_podman() -> None:
    """Our containers.conf, with ulimits below this machine's hard limits (runc fails to set
    one above them; nproc equal to a high hard limit was refused too, so it is capped)."""
    STATE.mkdir(parents=True, exist_ok=True)
    caps = {"NOFILE": (resource.RLIMIT_NOFILE, 65536), "NPROC": (resource.RLIMIT_NPROC, 32768)}
    text = (ROOT / "compose" / "podman" / "containers.conf").read_text()
    for name, (limit, cap) in caps.items():
        hard = resource.getrlimit(limit)[1]
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        text = text.replace(f"{name}:{name}", f"{value}:{value}")
    (STATE / "containers.conf").write_text(text)


# -- 2. images ------------------------------------------------------------------------------
def image_exists(name: str) -> bool:
    return run("podman", "image", "exists", name, check=False).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the base image installs from it too)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.sources"),
               *Path("/etc/apt/sources.list.d").glob("*.list")]
    for path in sources:
        if not path.exists() or "disabled" in path.name:
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            url = (words[1] if words[:1] == ["URIs:"] else
                   next((w for w in words[1:] if "://" in w), "") if words[:1] == ["deb"] else "")
            if url and "security" not in url and "debian" in url:
                return url
    return "http://deb.debian.org/debian"


def build_base_images() -> None:
    if not image_exists(BASE_IMAGE):
        with tempfile.TemporaryDirectory(prefix="microlab-rootfs-") as rootfs:
            run("debootstrap", "--variant=minbase", "bookworm", rootfs, debian_mirror(),
                env=os.environ)
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            run("podman", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE,
                stdin=tar.stdout)
            tar.wait()
    stand_ins = ROOT / "compose" / "stand-ins"
    for name, dockerfile in {PYTHON_IMAGE: "python.Dockerfile", **STAND_INS}.items():
        if not image_exists(name):
            run("podman", "build", "-q", "-t", name, "-f", str(stand_ins / dockerfile),
                str(stand_ins))


def image_python_version() -> str:
    return run("podman", "run", "--rm", PYTHON_IMAGE, "python3", "-c",
               "import platform; print(platform.python_version())").stdout.strip()


def fill_wheelhouse() -> None:
    """Wheels for the image's Python (Debian's 3.11.2: a few packages need older versions, and
    redis needs async-timeout below 3.11.3, which pip on a newer host would skip)."""
    version = image_python_version()
    pip = [sys.executable, "-m", "pip", "download", "-q", "--python-version", version,
           "--only-binary=:all:", "-d", str(WHEELHOUSE)]
    run(*pip, "-r", str(ROOT / "requirements.txt"), env=os.environ)
    run(*pip, "async-timeout==5.0.1", env=os.environ)


def build_project_image() -> None:
    run("podman", "build", "-q", "--build-arg", "PIP_NO_INDEX=1", "-t",
        "localhost/microlab:latest", str(ROOT))


# -- 3. the stack ---------------------------------------------------------------------------
@contextmanager
def podman_socket() -> Iterator[None]:
    """`podman system service`: the Docker-compatible API docker-compose talks to."""
    sock = STATE / "podman.sock"
    sock.unlink(missing_ok=True)
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               env=podman_env(), stdout=subprocess.DEVNULL,
                               # conmon leaves files (e.g. `oom`) in its working directory
                               cwd=STATE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait(lambda: sock.exists(), 30, "Podman's API socket")
        yield
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)


def compose(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run("docker-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE),
               *args, cwd=ROOT, **kwargs)


def containers() -> list[dict]:
    ids = run("podman", "ps", "-aq", "--filter",
              f"label=com.docker.compose.project={PROJECT}").stdout.split()
    return json.loads(run("podman", "inspect", *ids).stdout) if ids else []


def service_of(container: dict) -> str:
    return container["Config"]["Labels"]["com.docker.compose.service"]


class HealthDriver(threading.Thread):
    """Runs the containers' health checks: Podman 4.3 schedules them with systemd timers, and
    these machines have no systemd. A container not yet healthy is checked about once a second,
    a healthy one at the compose file's interval (5 s): each check starts a process in the
    container, and checking all fourteen every second kept a core busy while they booted."""

    def __init__(self, healthy_interval: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()
        self.healthy_interval = healthy_interval
        self._healthy_at: dict[str, float] = {}  # container id -> when its check last passed

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            ids = run("podman", "ps", "-q", "--filter",
                      f"label=com.docker.compose.project={PROJECT}", check=False).stdout.split()
            for container in ids:
                if time.monotonic() - self._healthy_at.get(container, -1e9) < self.healthy_interval:
                    continue
                check = run("podman", "healthcheck", "run", container, check=False, timeout=30)
                if check.returncode == 0:
                    self._healthy_at[container] = time.monotonic()
                else:
                    self._healthy_at.pop(container, None)


def health(container: dict) -> str:
    state = container["State"]
    if state["Status"] != "running":
        return state["Status"]
    check = state.get("Health") or state.get("Healthcheck") or {}
    return check.get("Status") or "running"


def wait_healthy(timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = containers()
        states = {service_of(c): health(c) for c in found}
        # `restart: on-failure` keeps a crashing service "running" between its attempts.
        dead = [service_of(c) for c in found if c["State"]["Status"] in ("exited", "dead")
                or c.get("RestartCount", 0) >= 3]
        if dead:
            raise StackError(f"{', '.join(dead)} exited or keeps restarting:\n"
                             + last_logs(dead))
        if found and all(state in ("healthy", "running") for state in states.values()):
            return
        if time.monotonic() > deadline:
            waiting = [name for name, state in states.items() if state not in ("healthy",)]
            raise StackError(f"not healthy after {timeout:.0f} s: {waiting}\n"
                             + last_logs(waiting))
        time.sleep(1)


def last_logs(services: list[str], lines: int = 25) -> str:
    text = []
    for container in containers():
        if service_of(container) in services:
            logs = run("podman", "logs", "--tail", str(lines), container["Id"], check=False)
            shown = [line[-400:] for line in (logs.stdout + logs.stderr).strip().splitlines()]
            text.append(f"--- {service_of(container)} (last {lines} lines)\n" + "\n".join(shown))
    return "\n".join(text)


def memory_mib() -> float:
    stats = run("podman", "stats", "--no-stream", "--format", "json", check=False).stdout
    units = {"kB": 1 / 1024, "KB": 1 / 1024, "MB": 1, "MiB": 1, "GB": 1024, "GiB": 1024, "B": 2 ** -20}
    total = 0.0
    for row in json.loads(stats or "[]"):
        used = row.get("mem_usage", "0B / 0B").split("/")[0].strip()
        number = used.rstrip("kKMGiB")
        unit = used[len(number):]
        total += float(number or 0) * units.get(unit, 1)
    return total


def out_of_memory() -> list[str]:
    """Services of the stack the kernel killed a process of for passing its memory limit. A
    gunicorn master replaces a killed worker silently, so only the kernel's log tells."""
    log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30)
    if log.returncode != 0:
        return []  # the kernel log is not readable here: nothing to tell
    ours = {container["Id"]: service_of(container) for container in containers()}
    return sorted({service for line in log.stdout.splitlines() if "oom_memcg=" in line
                   for cid, service in ours.items() if f"libpod-{cid}" in line})


def take_down() -> None:
    compose("down", "-v", "--remove-orphans", check=False, timeout=300)
    for container in containers():
        run("podman", "rm", "-f", container["Id"], check=False)
    for network in run("podman", "network", "ls", "-q", "--filter",
                       f"label=com.docker.compose.project={PROJECT}", check=False).stdout.split():
        run("podman", "network", "rm", "-f", network, check=False)
    run("podman", "network", "rm", "-f", f"{PROJECT}_default", check=False)
    for volume in run("podman", "volume", "ls", "-q", check=False).stdout.split():
        if volume.startswith(f"{PROJECT}_"):
            run("podman", "volume", "rm", "-f", volume, check=False)


def leftovers() -> list[str]:
    names = [f"container {service_of(c)}" for c in containers()]
    names += [f"volume {v}" for v in run("podman", "volume", "ls", "-q").stdout.split()
              if v.startswith(f"{PROJECT}_")]
    names += [f"network {n}" for n in run("podman", "network", "ls", "--format",
                                          "{{.Name}}").stdout.split() if n.startswith(PROJECT)]
    return names


def published_ports() -> PortPlan:
    """Every host port the compose file publishes (with this run's STACK_ENV), by service."""
    def host_port(published: str) -> int:  # "127.0.0.1:${VAR:-5672}:5672" or "127.0.0.1:3000:3000"
        host_side = published.split(":", 1)[1].rsplit(":", 1)[0]
        variable = re.fullmatch(r"\$\{(\w+):-(\d+)\}", host_side)
        return int(STACK_ENV.get(variable[1], variable[2]) if variable else host_side)

    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return PortPlan({f"{name} ({index})" if index else name: host_port(published)
                     for name, service in services.items()
                     for index, published in enumerate(service.get("ports", []))})


# -- 4. the shop, used --------------------------------------------------------------------------
def wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")


def exercise_the_shop() -> None:
    import socketio
    from toxiproxy import Toxiproxy

    gateway = "http://127.0.0.1:3000"
    wait(lambda: requests.get(f"{gateway}/api/health", timeout=5).status_code == 200, 60,
         "the gateway's /api/health to say every service is ok")
    email, password = f"ada-{uuid.uuid4().hex[:8]}@example.com", "correct-horse-battery"
    shop = requests.Session()
    registered = shop.post(f"{gateway}/api/users/register", timeout=30,
                           json={"email": email, "password": password, "name": "Ada"})
    expect(registered.status_code == 201, f"register: {registered.status_code} {registered.text}")
    login = shop.post(f"{gateway}/api/users/login", json={"email": email, "password": password},
                      timeout=30)
    expect(login.status_code == 200, f"login: {login.status_code} {login.text}")
    token = login.json()["token"]
    shop.headers["Authorization"] = f"Bearer {token}"
    products = shop.get(f"{gateway}/api/products", params={"limit": 50}, timeout=30).json()["items"]
    expect(len(products) > 0, "the catalogue is empty")
    admin = requests.Session()
    admin_login = admin.post(f"{gateway}/api/users/login", timeout=30,
                             json={"email": "admin@microlab.local", "password": "admin-password"})
    expect(admin_login.ok, f"admin login: {admin_login.text}")
    admin.headers["Authorization"] = f"Bearer {admin_login.json()['token']}"

    def stock(product_id: str) -> dict:
        return admin.get(f"{gateway}/api/inventory/{product_id}", timeout=30).json()

    product = next(p for p in products if stock(p["id"])["available"] >= 5)
    pushed: list[dict] = []
    client = socketio.Client(reconnection=False)
    client.on("notification", pushed.append)
    client.connect(gateway, transports=["polling"], auth={"token": token},
                   socketio_path="socket.io", wait_timeout=20)
    try:
        order = shop.post(f"{gateway}/api/orders", timeout=60,
                          json={"items": [{"product_id": product["id"], "quantity": 1}]})
        expect(order.status_code == 201 and order.json()["status"] == "confirmed",
               f"order: {order.status_code} {order.text}")
        order_id = order.json()["id"]
        wait(lambda: any(order_id in json.dumps(item) for item in pushed), 30,
             "the order's Socket.IO push")
    finally:
        client.disconnect()
    wait(lambda: any(order_id in item["body"] for item in
                     shop.get(f"{gateway}/api/emails", timeout=30).json()["items"]), 30,
         "the receipt email")
    print(f"compose-test: order {order_id} confirmed, pushed over Socket.IO, receipt sent")

    toxiproxy = Toxiproxy()
    toxiproxy.update_api_consumer("127.0.0.1", 8474)
    edge = toxiproxy.get_proxy("orders_to_payments")
    expect(edge is not None, "Toxiproxy has no proxy orders_to_payments")
    before = stock(product["id"])
    edge.disable()
    try:
        refused = shop.post(f"{gateway}/api/orders", timeout=60,
                            json={"items": [{"product_id": product["id"], "quantity": 1}]})
        body = refused.json()
        failed_id = body.get("error", {}).get("order_id")
        expect(refused.status_code == 503 and failed_id, f"cut order: {refused.status_code} {body}")
    finally:
        edge.enable()
    cancelled = wait(lambda: (o := shop.get(f"{gateway}/api/orders/{failed_id}", timeout=30)
                              .json())["status"] == "cancelled" and o, 60, "the order cancelled")
    expect(stock(product["id"])["available"] == before["available"],
           f"stock not released: {before} -> {stock(product['id'])}")
    charges = admin.get(f"{gateway}/api/payments", params={"order_id": failed_id},
                        timeout=30).json()["items"]
    expect(not any(charge["status"] == "captured" for charge in charges),
           f"money captured for a cancelled order: {charges}")
    print(f"compose-test: with orders->payments cut, order {failed_id} answered 503 and was "
          f"{cancelled['status']}; stock released, nothing charged")

    # Restored: once orders' breaker for payments lets a trial through, orders succeed again.
    healed_at = time.monotonic()
    wait(lambda: shop.post(f"{gateway}/api/orders", timeout=60, json={
        "items": [{"product_id": product["id"], "quantity": 1}]}).status_code == 201, 90,
         "an order to be confirmed again after orders->payments was restored")
    print(f"compose-test: orders->payments restored; orders confirmed again after "
          f"{time.monotonic() - healed_at:.0f} s (orders' breaker closed)")

    checked = wait(lambda: (done := run(sys.executable, "-m", "microlab", "--compose", "check",
                                        check=False, cwd=ROOT)).returncode == 0 and done,
                   60, "`microlab --compose check` to pass")
    print(checked.stdout.strip())


def exercise_the_tools() -> None:
    """The `tools` profile: JupyterLab behind its token, a notebook run inside its container
    reaching the shop by compose names (the same variables as local mode), Locust's web UI."""
    compose("--profile", "tools", "up", "-d", "--no-build", "jupyter", "locust", timeout=300)
    lab = "http://127.0.0.1:8888/api/status"
    wait(lambda: requests.get(lab, params={"token": "microlab"}, timeout=5).ok, 90, "JupyterLab")
    expect(requests.get(lab, timeout=5).status_code == 403, "JupyterLab answers without a token")
    wait(lambda: requests.get("http://127.0.0.1:8089/", timeout=5).ok, 60, "Locust's web UI")
    jupyter = next(c for c in containers() if service_of(c) == "jupyter")
    done = run("podman", "exec", jupyter["Id"], "python", "-m", "microlab.notebooks",
               "--existing", "01", "--out", "/tmp/notebooks", check=False, timeout=300)
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    expect(done.returncode == 0, "notebook 01 in the compose JupyterLab:\n"
           + "\n".join(verdicts or [done.stdout[-1500:], done.stderr[-1500:]]))
    print(f"compose-test: JupyterLab and Locust up; in JupyterLab's container: {verdicts[0]}")


def expect(condition: Any, message: str) -> None:
    if not condition:
        raise StackError(message)


# -- the whole test ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compose.stack",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    stages = Stages()
    try:
        with stages.stage("install Podman and compose"):
            install_tools()
            configure_podman()
        with stages.stage("base images (kept between runs)"):
            build_base_images()
        with stages.stage("wheelhouse"):
            fill_wheelhouse()
        with stages.stage("project image from the Dockerfile"):
            build_project_image()
        with podman_socket():
            take_down()  # what a killed earlier run may have left
            try:
                check_ports_free(published_ports(), skip=())
            except PreflightError as error:
                raise StackError(str(error)) from None
            driver = HealthDriver()
            driver.start()
            try:
                with stages.stage("up until every container is healthy"):
                    up = compose("up", "-d", "--no-build", check=False, timeout=600)
                    if up.returncode != 0:
                        raise StackError(f"docker-compose up failed:\n{up.stderr[-3000:]}")
                    wait_healthy()
                print(f"compose-test: {len(containers())} containers healthy, "
                      f"{memory_mib():.0f} MiB in use", flush=True)
                with stages.stage("the shop, used and broken"):
                    exercise_the_shop()
                with stages.stage("the tools profile"):
                    exercise_the_tools()
                killed = out_of_memory()
                expect(not killed, f"the kernel killed processes of {', '.join(killed)} at "
                       "their memory limit: raise it in microlab/compose.py")
            finally:
                driver.stopping.set()
                if not args.keep:
                    with stages.stage("down -v"):
                        take_down()
                        left = leftovers()
                        if left:
                            raise StackError(f"left behind: {', '.join(left)}")
    except StackError as error:
        print(f"compose-test: FAILED: {error}", file=sys.stderr)
        print(stages.report())
        return 1
    print(stages.report())
    print("compose-test: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

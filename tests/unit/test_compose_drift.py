"""docker-compose.yml and compose/toxiproxy.json agree with the topology, and are valid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from microlab.compose import COMPOSE_FILE, TOXIPROXY_CONFIG, compose_document, drift, render
from microlab.processes import ROOT
from microlab.topology import TOPOLOGY_FILE, load_topology, peer_env_name, plan_ports

TOPOLOGY = load_topology()
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())


def test_the_committed_files_are_what_the_topology_generates() -> None:
    differences = drift(render(TOPOLOGY))
    assert not differences, "run `python -m microlab.compose`:\n" + "\n".join(differences)


def test_a_hand_edit_of_the_compose_file_is_drift(tmp_path: Path) -> None:
    edited = tmp_path / "docker-compose.yml"
    edited.write_text(COMPOSE_FILE.read_text().replace("127.0.0.1:3003:3003", "127.0.0.1:3033:3003"))
    [difference] = drift({edited: render(TOPOLOGY)[COMPOSE_FILE]})
    assert "-    - 127.0.0.1:3033:3003" in difference and "+    - 127.0.0.1:3003:3003" in difference


def test_a_topology_change_not_regenerated_is_drift(tmp_path: Path) -> None:
    changed = tmp_path / "topology.toml"
    changed.write_text(TOPOLOGY_FILE.read_text().replace("port = 3005", "port = 3055"))
    files = render(load_topology(changed))
    differences = drift(files)
    assert len(differences) == 2  # a port of payments, and the proxies leading to it
    assert "3055" in differences[0] and "payments:3055" in differences[1]


def test_every_service_and_port_of_the_topology_is_a_compose_service() -> None:
    services = COMPOSE["services"]
    for name, service in TOPOLOGY.services.items():
        if name == "registry":
            assert services["consul"]["ports"] == [f"127.0.0.1:{service.port}:{service.port}"]
            continue
        composed = services[name]
        assert composed["command"] == ["python", "-m", service.module]
        assert composed["ports"] == [f"127.0.0.1:{service.port}:{service.port}"]
        env = composed["environment"]
        assert env["PORT"] == str(service.port) and env["ADVERTISE_HOST"] == name
        for callee in service.calls:
            assert env[peer_env_name(callee)].startswith("http://toxiproxy:")


def test_every_edge_is_a_toxiproxy_proxy_named_and_numbered_as_in_local_mode() -> None:
    proxies = {proxy["name"]: proxy for proxy in json.loads(TOXIPROXY_CONFIG.read_text())}
    ports = plan_ports(TOPOLOGY).proxy_ports
    assert set(proxies) == {edge.proxy_name for edge in TOPOLOGY.edges()}
    for edge in TOPOLOGY.edges():
        assert proxies[edge.proxy_name]["listen"] == f"0.0.0.0:{ports[edge.name]}"
    # ...and every address a service is given goes through one of them.
    listening = {proxy["listen"].rsplit(":", 1)[1] for proxy in proxies.values()}
    for name in TOPOLOGY.services:
        for value in COMPOSE["services"].get(name, {}).get("environment", {}).values():
            if match := re.search(r"toxiproxy:(\d+)", value or ""):
                assert match.group(1) in listening


def test_ports_published_on_loopback_only() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_memory_limits_of_the_stack_add_up_to_at_most_2_gb() -> None:
    units = {"m": 1, "g": 1024}
    stack = [service for service in COMPOSE["services"].values() if "profiles" not in service]
    assert all("mem_limit" in service for service in stack)
    total = sum(int(s["mem_limit"][:-1]) * units[s["mem_limit"][-1]] for s in stack)
    assert total <= 2048, f"{total} MiB"


def test_start_order_is_health_checked() -> None:
    for name, service in COMPOSE["services"].items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in COMPOSE["services"][dependency], dependency


@pytest.mark.parametrize("command", [
    ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
    ["yamllint", "--strict", "-c", str(ROOT / ".yamllint.yaml"), str(COMPOSE_FILE)],
], ids=["compose-spec", "yamllint"])
def test_the_compose_file_passes_offline_validators(command: list[str]) -> None:
    tool = Path(sys.executable).with_name(command[0])
    done = subprocess.run([str(tool), *command[1:]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_wrong_condition(tmp_path: Path) -> None:
    broken = compose_document(TOPOLOGY)
    broken["services"]["orders"]["depends_on"]["toxiproxy"]["condition"] = "service_ready"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    tool = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run([str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1


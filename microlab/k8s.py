"""Kubernetes manifests and Istio traffic policy, generated from the topology.

    python -m microlab.k8s            # write k8s/ and istio/ (the generated files only)
    python -m microlab.k8s --check    # exit 1, naming the differences, when they drift

The same topology that local mode runs and `microlab.compose` turns into docker-compose.yml is
turned here into a kustomize base (k8s/base/), the pieces of the overlays that depend on the
topology (k8s/overlays/*/generated-*.yaml) and the mesh's policy (istio/). The overlays'
kustomization.yaml files are written by hand: they only choose between pieces.
`python -m microlab.validate` then renders and checks all of it offline.

What differs from compose, spelled out once:

- no Toxiproxy between services: a peer is its Service's DNS name (`payments:3005`), the
  registry is Consul (`consul:8500`). The mesh plays Toxiproxy's part: every VirtualService
  carries a fault-injection delay and abort, off (0 %) until a learner turns them up;
- the mesh offers the breaker, the retries and the timeouts of a hop as well, for every service
  alike: a DestinationRule's outlier detection ejects a failing pod (our breaker's threshold and
  recovery time), a VirtualService retries with a per-try timeout (from the gateway's read
  timeout of that service);
- the image carries a version tag instead of `latest`, runs as the Dockerfile's user with a
  read-only root filesystem, and `/tmp` is the one writable place;
- settings shared by every service (MICROLAB_ENV, tracing) live in a ConfigMap, the JWT secret
  in a Secret; every service gets JWT_SECRET, because every service verifies tokens
  (patterns/service.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from microlab.compose import (DEFAULT_SERVICE_MEMORY, SERVICE_MEMORY, infrastructure, upstream_of,
                              write_or_check)
from microlab.processes import ROOT
from microlab.topology import Service, Topology, load_topology, wiring_env
from services.gateway.domain import ROUTES, SOCKET_IO, Route

K8S_DIR = ROOT / "k8s"
ISTIO_DIR = ROOT / "istio"
BASE_DIR = K8S_DIR / "base"
NAMESPACE = "microlab"
IMAGE = "microlab:0.1.0"  # a version tag: the validator refuses `latest` and untagged images
RUN_AS_USER = 10001  # the `microlab` user of the Dockerfile
SHOP_HOST = "shop.microlab.example"
SETTINGS_CONFIGMAP = "microlab-settings"
SECRET_NAME = "microlab-secrets"
SHARED_SETTINGS = {"MICROLAB_ENV": "dev", "OTEL_TRACES_EXPORTER": "otlp",
                   "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318"}
# Socket.IO keeps each client on the replica it connected to, and our notifications service has
# no cross-replica message manager, so it stays at one replica (k8s/README.md says more).
SINGLE_REPLICA = frozenset({"notifications"})
AUTOSCALED = ("gateway", "orders")
# The parts compose runs next to our services; here: StatefulSets in dev, outside in prod.
# Name: (port name, port, data folder). A port name says the protocol to Istio.
INFRA = {"mongo": ("tcp-mongo", 27017, "/data/db"),
         "rabbitmq": ("tcp-amqp", 5672, "/var/lib/rabbitmq"),
         "redis": ("tcp-redis", 6379, "/data"),
         "consul": ("http", 8500, "/consul/data")}
# Where an operator's managed services answer in prod (k8s/README.md: replace with yours).
EXTERNAL_HOSTS = {"mongo": "mongodb.data.svc.cluster.local",
                  "rabbitmq": "rabbitmq.messaging.svc.cluster.local",
                  "redis": "redis.data.svc.cluster.local",
                  "consul": "consul-server.consul.svc.cluster.local"}
INGRESS_GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
# The mesh's breaker and retries, from the same defaults as patterns/breaker.py's callers
# (BREAKER_FAILURE_THRESHOLD 5, BREAKER_RECOVERY_TIMEOUT 30 s). A pod is ejected for failures
# of its own (refused, reset, timed out: "local origin"), not for the 5xx it answers: orders'
# 503 says payments is down, and ejecting healthy orders pods for it would spread the outage.
OUTLIER = {"splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailures": 5,
           "consecutive5xxErrors": 0, "interval": "10s", "baseEjectionTime": "30s",
           "maxEjectionPercent": 50}
RETRY_ATTEMPTS = 2
# Only failures where the request surely did not run: a POST that creates an order must not be
# sent twice because the first answer was slow or was a 503 (orders answers 503 after undoing a
# saga: retrying it would run the saga again).
RETRY_ON = "connect-failure,refused-stream"
FAULT = {"delay": {"percentage": {"value": 0.0}, "fixedDelay": "5s"},
         "abort": {"percentage": {"value": 0.0}, "httpStatus": 503}}
GENERATED = "# Generated from microlab/topology.toml by `python -m microlab.k8s`: do not edit.\n"


def our_services(topology: Topology) -> list[Service]:
    """The services that get a Deployment: all but the registry, whose part Consul plays."""
    return [service for name, service in topology.services.items() if name != "registry"]


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app": name, "version": "v1"}


def memory(compose_limit: str) -> str:
    """Compose's `160m` (MiB) as Kubernetes' `160Mi`."""
    units = {"m": "Mi", "g": "Gi"}
    return compose_limit[:-1] + units[compose_limit[-1]]


def restricted_security_context(read_only: bool = True) -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": read_only,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}


def service_env(service: Service, topology: Topology) -> list[dict[str, Any]]:
    """The variables compose gives the service, with Service DNS names as addresses; the
    shared ones come from the ConfigMap, the secret ones from the Secret."""
    plain = {"SERVICE_NAME": service.name, "HOST": "0.0.0.0", "ADVERTISE_HOST": service.name,
             "PORT": str(service.port), "THREADS": str(service.threads),
             **wiring_env(service, lambda target: upstream_of(target, topology))}
    if service.name == "gateway":
        plain["REDIS_URL"] = f"redis://redis:{INFRA['redis'][1]}/0"
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in plain.items()]
    env.append({"name": "JWT_SECRET",
                "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "JWT_SECRET"}}})
    if service.name == "users":  # the first admin, when the operator's Secret names one
        env += [{"name": key, "valueFrom": {"secretKeyRef": {
            "name": SECRET_NAME, "key": key, "optional": True}}}
            for key in ("ADMIN_EMAIL", "ADMIN_PASSWORD")]
    return env


def deployment(service: Service, topology: Topology) -> dict[str, Any]:
    health = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 5}
    container = {
        "name": service.name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", service.module],
        "ports": [{"name": "http", "containerPort": service.port, "protocol": "TCP"}],
        "env": service_env(service, topology),
        "envFrom": [{"configMapRef": {"name": SETTINGS_CONFIGMAP}}],
        "resources": {
            "requests": {"cpu": "50m", "memory": memory(DEFAULT_SERVICE_MEMORY)},
            "limits": {"cpu": "500m",
                       "memory": memory(SERVICE_MEMORY.get(service.name, DEFAULT_SERVICE_MEMORY))}},
        # /health answers 503 while a dependency is down: readiness takes the pod out of the
        # Service at once. Liveness asks only whether the process accepts connections: a
        # restart cannot bring a database back, and would restart every pod at once.
        "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "initialDelaySeconds": 30,
                          "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": restricted_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": service.name, "labels": labels(service.name, "service")},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": service.name}},
            "template": {
                "metadata": {"labels": labels(service.name, "service")},
                "spec": {
                    "serviceAccountName": service.name,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER,
                                        "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                }}}}


def service_account(name: str) -> dict[str, Any]:
    """One identity per service: the mesh's AuthorizationPolicies name callers by it."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "labels": labels(name, "service")},
            "automountServiceAccountToken": False}


def k8s_service(name: str, port: int, port_name: str, component: str,
                headless: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"app.kubernetes.io/name": name},
        "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels(name, component)}, "spec": spec}


def ingress(topology: Topology) -> dict[str, Any]:
    backend = {"service": {"name": "gateway", "port": {"number": topology.service("gateway").port}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "shop", "labels": labels("gateway", "service")},
            "spec": {"ingressClassName": "nginx",
                     "rules": [{"host": SHOP_HOST, "http": {"paths": [
                         {"path": "/", "pathType": "Prefix", "backend": backend}]}}]}}


def statefulset(name: str) -> dict[str, Any]:
    """A dev-only single-node MongoDB, RabbitMQ, Redis or Consul with a volume, on compose's
    image, command, health check and memory limit."""
    composed = infrastructure()[name]
    port_name, port, data_path = INFRA[name]
    test = composed["healthcheck"]["test"]
    check = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    container: dict[str, Any] = {
        "name": name, "image": composed["image"], "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": memory(composed["mem_limit"])},
                      "limits": {"cpu": "500m", "memory": memory(composed["mem_limit"])}},
        "readinessProbe": {"exec": {"command": check}, "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": port_name}, "initialDelaySeconds": 30,
                          "periodSeconds": 10, "failureThreshold": 6},
        # RabbitMQ's entrypoint writes its config under /etc: its root filesystem stays writable.
        "securityContext": restricted_security_context(read_only=name != "rabbitmq"),
        "volumeMounts": [{"name": "data", "mountPath": data_path},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    if name == "consul":  # compose's `-dev` keeps state in memory; here it goes to the volume
        container["args"] = ["agent", "-server", "-bootstrap-expect=1", "-client=0.0.0.0",
                             f"-data-dir={data_path}", "-log-level=warn"]
    elif "command" in composed:
        container["args"] = composed["command"]
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels(name, "infrastructure")},
        "spec": {
            "serviceName": name, "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels(name, "infrastructure")},
                "spec": {"automountServiceAccountToken": False,
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 999,
                                             "fsGroup": 999,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [container],
                         "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]}},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}]}}


def external_service(name: str) -> dict[str, Any]:
    """In prod the name our services dial (`mongo`, `rabbitmq`...) is an alias of the
    operator's managed service: the services' settings stay the same."""
    port_name, port, _ = INFRA[name]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels(name, "infrastructure")},
            "spec": {"type": "ExternalName", "externalName": EXTERNAL_HOSTS[name],
                     "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}}


def disruption_budget(name: str) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": labels(name, "service")},
            "spec": {"minAvailable": 1,
                     "selector": {"matchLabels": {"app.kubernetes.io/name": name}}}}


def autoscaler(name: str) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": labels(name, "service")},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": name},
                     "minReplicas": 2, "maxReplicas": 6,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": 70}}}]}}


def routes_to(name: str) -> list[Route]:
    """The gateway's routes that lead to service `name` (Socket.IO polls lead to notifications)."""
    return [route for route in (*ROUTES, SOCKET_IO) if route.service == name]


def timeout_of(name: str) -> float:
    """The mesh's timeout of a service: the longest the gateway waits for it (10 s by default);
    the gateway itself gets the longest of all, as it waits for the slowest upstream."""
    routes = list((*ROUTES, SOCKET_IO)) if name == "gateway" else routes_to(name)
    return max((route.read_timeout for route in routes), default=Route.read_timeout)


def seconds(value: float) -> str:
    return f"{value:g}s"


def destination_rule(service: Service) -> dict[str, Any]:
    # A connection pool the size of the service's gunicorn threads: past it requests queue in
    # the caller's sidecar (bounded), not in the service.
    pool = {"tcp": {"maxConnections": service.threads, "connectTimeout": "2s"},
            "http": {"http1MaxPendingRequests": service.threads, "idleTimeout": "60s"}}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": service.name},
            "spec": {"host": service.name,
                     "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"},
                                       "connectionPool": pool,
                                       "outlierDetection": OUTLIER}}}


def virtual_service(service: Service) -> dict[str, Any]:
    timeout = timeout_of(service.name)
    hosts, gateways = [service.name], None
    if service.name == "gateway":  # the shop's entrance too
        hosts, gateways = [service.name, SHOP_HOST], ["mesh", "shop"]
    spec: dict[str, Any] = {"hosts": hosts}
    if gateways:
        spec["gateways"] = gateways
    spec["http"] = [{
        "name": "default",
        "timeout": seconds(timeout),
        "retries": {"attempts": RETRY_ATTEMPTS, "perTryTimeout": seconds(timeout / 2),
                    "retryOn": RETRY_ON},
        "fault": FAULT,
        "route": [{"destination": {"host": service.name, "port": {"number": service.port}}}],
    }]
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": service.name}, "spec": spec}


def principal(name: str) -> str:
    return f"cluster.local/ns/{NAMESPACE}/sa/{name}"


def authorization_policy(service: Service, topology: Topology) -> dict[str, Any]:
    """Who may call `service`: the gateway on its public routes, the services whose `calls`
    name it on any route, and anyone on GET /health (kubelet and Consul checks)."""
    callers = [name for name, caller in topology.services.items()
               if service.name in caller.calls and name != "gateway"]
    rules: list[dict[str, Any]] = []
    if service.name == "gateway":
        rules.append({"from": [{"source": {"principals": [INGRESS_GATEWAY_PRINCIPAL]}}]})
    elif routes := routes_to(service.name):
        paths = [path for route in routes
                 for path in (route.upstream_prefix, route.upstream_prefix + "/*")]
        rules.append({"from": [{"source": {"principals": [principal("gateway")]}}],
                      "to": [{"operation": {"paths": paths}}]})
    if callers:
        rules.append({"from": [{"source": {"principals": [principal(c) for c in callers]}}]})
    rules.append({"to": [{"operation": {"methods": ["GET"], "paths": ["/health"]}}]})
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": service.name},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": service.name}},
                     "action": "ALLOW", "rules": rules}}


def shop_gateway() -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "shop"},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                                  "hosts": [SHOP_HOST]}]}}


def peer_authentication() -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "STRICT"}}}


class _PlainDumper(yaml.SafeDumper):
    """Writes a dict used twice (the /health probe) out twice instead of as a YAML alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def documents(*docs: dict[str, Any], comment: str = "") -> str:
    text = "---\n".join(yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, width=100)
                         for doc in docs)
    return GENERATED + comment + text


def kustomization(resources: list[str], **extra: Any) -> str:
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
           "resources": resources, **extra}
    return documents(doc)


def render(topology: Topology) -> dict[Path, str]:
    """Every generated file and its text."""
    services = our_services(topology)
    files: dict[Path, str] = {}
    for service in services:
        files[BASE_DIR / f"{service.name}.yaml"] = documents(
            service_account(service.name), deployment(service, topology),
            k8s_service(service.name, service.port, "http", "service"),
            comment=f"# {service.name}: {service.description}\n")
        files[ISTIO_DIR / f"{service.name}.yaml"] = documents(
            destination_rule(service), virtual_service(service),
            authorization_policy(service, topology),
            comment=f"# {service.name}: how the mesh reaches it, and who may.\n")
    files[BASE_DIR / "ingress.yaml"] = documents(ingress(topology))
    files[BASE_DIR / "kustomization.yaml"] = kustomization(
        [f"{service.name}.yaml" for service in services] + ["ingress.yaml"],
        labels=[{"pairs": {"app.kubernetes.io/part-of": "microlab"}}],
        configMapGenerator=[{"name": SETTINGS_CONFIGMAP,
                             "literals": [f"{key}={value}"
                                          for key, value in SHARED_SETTINGS.items()]}])
    files[K8S_DIR / "overlays" / "dev" / "generated-infrastructure.yaml"] = documents(
        *[doc for name in INFRA
          for doc in (statefulset(name), k8s_service(name, INFRA[name][1], INFRA[name][0],
                                                     "infrastructure", headless=True))],
        comment="# dev: single-node MongoDB, RabbitMQ, Redis and Consul, each with a volume.\n")
    files[K8S_DIR / "overlays" / "prod" / "generated-external.yaml"] = documents(
        *[external_service(name) for name in INFRA],
        comment="# prod: the infrastructure is the operator's; these names point at it.\n")
    scaled = [service.name for service in services if service.name not in SINGLE_REPLICA]
    files[K8S_DIR / "overlays" / "prod" / "generated-availability.yaml"] = documents(
        *[disruption_budget(name) for name in scaled], *[autoscaler(name) for name in AUTOSCALED],
        comment="# prod: a PodDisruptionBudget per replicated service, autoscaling where load "
                "lands first.\n")
    files[ISTIO_DIR / "mesh.yaml"] = documents(
        peer_authentication(), shop_gateway(),
        comment="# Mutual TLS required between every pod of the namespace; the shop's entrance.\n")
    files[ISTIO_DIR / "kustomization.yaml"] = kustomization(
        ["mesh.yaml"] + [f"{service.name}.yaml" for service in services], namespace=NAMESPACE)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.k8s",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 when the files differ from the topology")
    args = parser.parse_args(argv)
    return write_or_check(render(load_topology()), args.check,
                          "k8s/ or istio/ drifted from the topology: run `python -m microlab.k8s`")


if __name__ == "__main__":
    sys.exit(main())

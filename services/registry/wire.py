"""Consul's HTTP API on the wire: request bodies and query strings in, Consul's JSON shapes out.

Kept apart from the catalog so `domain.py` speaks Python and this module alone knows Consul's
spelling. Like Consul, request keys are matched ignoring case and underscores (`ttl`, `TTL` and
`DeregisterCriticalServiceAfter` / `deregister_critical_service_after` all work, which is how
py-consul's lower-case payloads get through), durations are Go strings ("10s", "1m30s",
"500ms") or numbers of nanoseconds, and unknown keys are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from services.registry.domain import (
    Catalog,
    Check,
    CheckDefinition,
    CheckStatus,
    HealthEntry,
    InvalidDefinition,
    Service,
    ServiceDefinition,
)

_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNSUPPORTED_CHECKS = ("tcp", "udp", "grpc", "args", "script", "dockercontainerid", "h2ping",
                       "aliasservice", "aliasnode", "osservice")


class BadRequest(InvalidDefinition):
    """A body or query string that cannot be read; Consul answers 400 with a text body."""


# ---- reading requests ---------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string: "10s", "1m30s", "250ms", "0"."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body or _DURATION.sub("", body):
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * sum(float(number) * _UNITS[unit] for number, unit in _DURATION.findall(body))


def decode_service(body: bytes) -> ServiceDefinition:
    """A PUT /v1/agent/service/register body as a ServiceDefinition (BadRequest if unreadable)."""
    try:
        raw = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"Request decode failed: {error}") from None
    fields = _fields(raw, "service definition")
    checks = []
    if fields.get("check"):
        checks.append(_check(fields["check"]))
    for item in _typed(fields.get("checks"), list, "Checks", []):
        if item:
            checks.append(_check(item))
    return ServiceDefinition(
        name=_typed(fields.get("name"), str, "Name", ""),
        service_id=_typed(fields.get("id"), str, "ID", None) or None,
        tags=tuple(_string_list(fields.get("tags"), "Tags")),
        address=_typed(fields.get("address"), str, "Address", ""),
        port=_typed(fields.get("port"), int, "Port", 0),
        meta=_string_map(fields.get("meta"), "Meta"),
        weights=_weights(fields.get("weights")),
        checks=tuple(checks),
    )


def blocking_params(args: Mapping[str, str]) -> tuple[int | None, float | None]:
    """`index` and `wait` of a blocking query; (None, None) when it is not one."""
    index = wait = None
    if args.get("index"):
        if not args["index"].isdigit():
            raise BadRequest("Invalid index")
        index = int(args["index"])
    if args.get("wait"):
        try:
            wait = parse_duration(args["wait"])
        except ValueError:
            raise BadRequest("Invalid wait time") from None
        if wait < 0:
            raise BadRequest("Invalid wait time")
    return index, wait


def flag(args: Mapping[str, str], name: str) -> bool:
    """A boolean query flag: present and empty means true, else Go's ParseBool spellings."""
    if name not in args:
        return False
    value = args[name]
    if value in ("", "1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise BadRequest(f"Invalid value for ?{name}")


# ---- writing responses --------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """Go's spelling of a duration ("10s", "1m30s", "500ms"); "" when there is none."""
    if not seconds:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs:g}s"
    if minutes:
        return f"{int(minutes)}m{secs:g}s"
    return f"{secs:g}s"


def agent_service(service: Service, catalog: Catalog) -> dict[str, Any]:
    return {
        "ID": service.id, "Service": service.name, "Tags": list(service.tags),
        "Meta": service.meta, "Port": service.port, "Address": service.address,
        "Weights": service.weights, "EnableTagOverride": False,
        "Datacenter": catalog.datacenter,
    }


def check_json(check: Check, catalog: Catalog) -> dict[str, Any]:
    definition = check.definition
    return {
        "Node": catalog.node, "CheckID": check.id, "Name": check.name,
        "Status": check.status.value, "Notes": definition.notes, "Output": check.output,
        "ServiceID": check.service_id, "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags), "Type": check.kind.value,
        "Interval": format_duration(definition.interval),
        "Timeout": format_duration(definition.timeout), "ExposedPort": 0, "Definition": {},
        "CreateIndex": check.create_index, "ModifyIndex": check.modify_index,
    }


def health_entry(entry: HealthEntry, catalog: Catalog) -> dict[str, Any]:
    service = entry.service
    return {
        "Node": _node(catalog),
        "Service": {
            "ID": service.id, "Service": service.name, "Tags": list(service.tags),
            "Address": service.address, "Meta": service.meta, "Port": service.port,
            "Weights": service.weights, "EnableTagOverride": False,
            "CreateIndex": service.create_index, "ModifyIndex": service.modify_index,
        },
        "Checks": [_node_check(catalog)] + [check_json(check, catalog) for check in entry.checks],
    }


def catalog_service(service: Service, catalog: Catalog) -> dict[str, Any]:
    return {
        "ID": catalog.node_id, "Node": catalog.node, "Address": catalog.node_address,
        "Datacenter": catalog.datacenter, "TaggedAddresses": _tagged(catalog), "NodeMeta": {},
        "ServiceKind": "", "ServiceID": service.id, "ServiceName": service.name,
        "ServiceTags": list(service.tags), "ServiceAddress": service.address,
        "ServiceWeights": service.weights, "ServiceMeta": service.meta,
        "ServicePort": service.port, "ServiceEnableTagOverride": False,
        "CreateIndex": service.create_index, "ModifyIndex": service.modify_index,
    }


# ---- internals ----------------------------------------------------------------------------


def _fields(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest(f"Request decode failed: the {what} must be a JSON object")
    return {key.replace("_", "").lower(): value for key, value in raw.items()}


def _typed(value: Any, kind: type, name: str, default: Any) -> Any:
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"Request decode failed: {name} must be a JSON {_JSON_NAMES[kind]}, "
                         f"not {json.dumps(value)[:60]}")
    return value


_JSON_NAMES = {str: "string", int: "integer", list: "array", dict: "object"}


def _string_list(value: Any, name: str) -> list[str]:
    items = _typed(value, list, name, [])
    if not all(isinstance(item, str) for item in items):
        raise BadRequest(f"Request decode failed: {name} must be an array of strings")
    return items


def _string_map(value: Any, name: str) -> dict[str, str]:
    items = _typed(value, dict, name, {})
    if not all(isinstance(item, str) for item in items.values()):
        raise BadRequest(f"Request decode failed: {name} must map strings to strings")
    return dict(items)


def _weights(value: Any) -> dict[str, int]:
    fields = _fields(_typed(value, dict, "Weights", {}), "Weights")
    weights = {"Passing": _typed(fields.get("passing"), int, "Weights.Passing", 1),
               "Warning": _typed(fields.get("warning"), int, "Weights.Warning", 1)}
    if weights["Passing"] < 1 or weights["Warning"] < 0:
        raise BadRequest("Invalid Weights: Passing must be >= 1 and Warning >= 0")
    return weights


def _duration(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1e9  # a JSON number is nanoseconds, as Go's time.Duration
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as error:
            raise BadRequest(f"Request decode failed: {name}: {error}") from None
    raise BadRequest(f"Request decode failed: {name} must be a duration such as \"10s\"")


def _check(raw: Any) -> CheckDefinition:
    fields = _fields(raw, "check")
    for kind in _UNSUPPORTED_CHECKS:
        if fields.get(kind):
            raise BadRequest(f"Invalid check: this registry runs TTL and HTTP checks only, "
                             f"not {kind.upper()} checks")
    status = _typed(fields.get("status"), str, "Status", "")
    if status and status not in tuple(CheckStatus):
        raise BadRequest("Status for checks must 'passing', 'warning', 'critical'")
    header = _typed(fields.get("header"), dict, "Header", {})
    if not all(isinstance(values, list) and all(isinstance(v, str) for v in values)
               for values in header.values()):
        raise BadRequest("Request decode failed: Header must map names to arrays of strings")
    return CheckDefinition(
        ttl=_duration(fields.get("ttl"), "TTL"),
        http=_typed(fields.get("http"), str, "HTTP", "") or None,
        interval=_duration(fields.get("interval"), "Interval"),
        timeout=_duration(fields.get("timeout"), "Timeout"),
        method=_typed(fields.get("method"), str, "Method", "") or "GET",
        header=header,
        check_id=_typed(fields.get("checkid") or fields.get("id"), str, "CheckID", "") or None,
        name=_typed(fields.get("name"), str, "Name", "") or None,
        notes=_typed(fields.get("notes"), str, "Notes", ""),
        status=CheckStatus(status) if status else None,
        deregister_after=_duration(fields.get("deregistercriticalserviceafter"),
                                   "DeregisterCriticalServiceAfter"),
    )


def _tagged(catalog: Catalog) -> dict[str, str]:
    return {"lan": catalog.node_address, "wan": catalog.node_address}


def _node(catalog: Catalog) -> dict[str, Any]:
    return {"ID": catalog.node_id, "Node": catalog.node, "Address": catalog.node_address,
            "Datacenter": catalog.datacenter, "TaggedAddresses": _tagged(catalog), "Meta": {},
            "CreateIndex": 1, "ModifyIndex": 1}


def _node_check(catalog: Catalog) -> dict[str, Any]:
    """The node's own check: Consul's gossip health, always passing for this single node."""
    return {"Node": catalog.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "", "Interval": "",
            "Timeout": "", "ExposedPort": 0, "Definition": {}, "CreateIndex": 1,
            "ModifyIndex": 1}

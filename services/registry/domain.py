"""The registry's catalog: services, their health checks, and the index that says what changed.

State lives in memory, like a Consul agent started with `-dev`: when the registry restarts it is
empty until services register again (`patterns.discovery` re-registers on its next heartbeat).

The rules, as Consul has them:

- A check starts `critical`, unless registered with an initial `Status`.
- A TTL check keeps the status it was last given for `ttl` seconds; not refreshed by then, it
  turns `critical` with output "TTL expired ...". Every pass, warn or fail restarts that timer.
- An HTTP check is probed every `interval` (the probing is I/O, so `checker.py` does it): a 2xx
  answer is `passing`, 429 is `warning`, anything else, or no answer, is `critical`.
- A service with a check that has been `critical` for longer than the check's
  `deregister_after` (Consul's DeregisterCriticalServiceAfter) is deregistered.
- Every change bumps one counter, the index. Each service name remembers the index of its last
  change, so a blocking query on one service wakes only when that service changes. A check
  whose status stays the same (a heartbeat) changes nothing anyone waits for.

Time comes from an injectable clock: `sweep()` and `due_http_checks()` read it and nothing here
sleeps or does I/O. The one wait is `wait_for_change`, which blocks on a condition variable (in
real time) until an index moves past the caller's.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum

from patterns.clock import SYSTEM_CLOCK, Clock


class CheckStatus(StrEnum):
    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


class CheckKind(StrEnum):
    TTL = "ttl"
    HTTP = "http"


class RegistryError(Exception):
    """A request the catalog refuses; `status` is the HTTP status Consul answers with."""

    status = 400


class InvalidDefinition(RegistryError):
    """A service or check definition that cannot be registered."""


class UnknownService(RegistryError):
    status = 404

    def __init__(self, service_id: str) -> None:
        super().__init__(f"Unknown service ID \"{service_id}\". Ensure that the service ID is "
                         "passed, not the service name.")


class UnknownCheck(RegistryError):
    status = 404

    def __init__(self, check_id: str) -> None:
        super().__init__(f"Unknown check ID \"{check_id}\". Ensure that the check ID is passed, "
                         "not the check name.")


class NotATtlCheck(RegistryError):
    def __init__(self, check_id: str) -> None:
        super().__init__(f"CheckID \"{check_id}\" does not have associated TTL")


@dataclass(frozen=True)
class CheckDefinition:
    """One check as registered. Exactly one of `ttl` or `http` (with `interval`) is set."""

    ttl: float | None = None
    http: str | None = None
    interval: float | None = None
    timeout: float | None = None
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    check_id: str | None = None
    name: str | None = None
    notes: str = ""
    status: CheckStatus | None = None
    deregister_after: float | None = None

    def __post_init__(self) -> None:
        if self.ttl is not None and self.interval is not None:
            raise InvalidDefinition("Invalid check: Interval and TTL cannot both be specified")
        if self.http is not None:
            if not self.interval or self.interval <= 0:
                raise InvalidDefinition("Invalid check: Interval must be > 0 for HTTP checks")
        elif self.ttl is None or self.ttl <= 0:
            raise InvalidDefinition(
                "Invalid check: TTL must be > 0 for TTL checks (this registry supports TTL "
                "checks and HTTP checks with an Interval)")
        if self.timeout is not None and self.timeout <= 0:
            raise InvalidDefinition("Invalid check: Timeout must be > 0")

    @property
    def kind(self) -> CheckKind:
        return CheckKind.HTTP if self.http is not None else CheckKind.TTL


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    service_id: str | None = None
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    checks: tuple[CheckDefinition, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidDefinition("Missing service name")
        if self.address in ("0.0.0.0", "::", "[::]"):
            raise InvalidDefinition("Invalid service address")
        if not 0 <= self.port <= 65535:
            raise InvalidDefinition(f"Invalid service port {self.port}")

    @property
    def id(self) -> str:
        return self.service_id or self.name


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    tags: tuple[str, ...]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    create_index: int
    modify_index: int


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    service_id: str
    service_name: str
    service_tags: tuple[str, ...]
    definition: CheckDefinition
    status: CheckStatus
    output: str
    create_index: int
    modify_index: int
    critical_since: float | None  # clock time it turned critical; None while not critical
    expires_at: float | None = None  # TTL checks: when it turns critical unless refreshed
    next_probe_at: float | None = None  # HTTP checks: when it is due
    probing: bool = False  # HTTP checks: a probe is out and has not reported yet

    @property
    def kind(self) -> CheckKind:
        return self.definition.kind


@dataclass(frozen=True)
class HttpProbe:
    """An HTTP check that is due: what `checker.py` should request."""

    check_id: str
    url: str
    method: str
    header: dict[str, list[str]]
    timeout: float


@dataclass(frozen=True)
class HealthEntry:
    """One instance of a service with its checks, as the health endpoint reports it."""

    service: Service
    checks: tuple[Check, ...]

    @property
    def passing(self) -> bool:
        return all(check.status is CheckStatus.PASSING for check in self.checks)


DEFAULT_HTTP_TIMEOUT = 5.0  # seconds; Consul's default is 10 s: ours favours a quick verdict
MAX_OUTPUT = 4096  # characters of check output kept, as Consul keeps 4 KiB


def status_for_http_code(code: int) -> CheckStatus:
    """How an HTTP check reads its answer: 2xx passing, 429 warning, the rest critical."""
    if 200 <= code < 300:
        return CheckStatus.PASSING
    if code == 429:
        return CheckStatus.WARNING
    return CheckStatus.CRITICAL


class Catalog:
    """Every registered service and check, with the indexes blocking queries wait on."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, *, node: str = "registry",
                 node_address: str = "127.0.0.1", datacenter: str = "dc1") -> None:
        self.clock = clock
        self.node = node
        self.node_address = node_address
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}.microlab"))
        self.datacenter = datacenter
        self._services: dict[str, Service] = {}
        self._checks: dict[str, Check] = {}
        self._index = 1
        self._name_index: dict[str, int] = {}  # service name -> index of its last change
        self._names_index = 1  # index of the last change to which services exist
        self._changed = threading.Condition()

    # ---- writes ---------------------------------------------------------------------------

    def register(self, definition: ServiceDefinition, *,
                 replace_existing_checks: bool = False) -> Service:
        """Add a service, or replace the one with the same ID (its checks keep their status)."""
        now = self.clock.monotonic()
        with self._changed:
            index = self._bump()
            previous = self._services.get(definition.id)
            service = Service(
                id=definition.id, name=definition.name, tags=definition.tags,
                address=definition.address, port=definition.port, meta=dict(definition.meta),
                weights=dict(definition.weights),
                create_index=previous.create_index if previous else index, modify_index=index)
            self._services[service.id] = service
            new_ids = self._register_checks(service, definition.checks, now, index)
            for check in list(self._checks.values()):
                if check.service_id == service.id and check.id not in new_ids:
                    if replace_existing_checks:
                        del self._checks[check.id]
                    else:  # the service may have new tags or a new name: keep checks in step
                        self._checks[check.id] = replace(
                            check, service_name=service.name, service_tags=service.tags)
            self._names_index = index
            self._name_index[service.name] = index
            if previous and previous.name != service.name:
                self._name_index[previous.name] = index
            self._changed.notify_all()
            return service

    def deregister(self, service_id: str) -> None:
        with self._changed:
            if service_id not in self._services:
                raise UnknownService(service_id)
            self._remove_service(service_id)

    def update_ttl(self, check_id: str, status: CheckStatus, note: str = "") -> None:
        """What a service's heartbeat does: set a TTL check's status and restart its timer."""
        now = self.clock.monotonic()
        with self._changed:
            check = self._checks.get(check_id)
            if check is None:
                raise UnknownCheck(check_id)
            if check.kind is not CheckKind.TTL:
                raise NotATtlCheck(check_id)
            assert check.definition.ttl is not None
            check = replace(check, expires_at=now + check.definition.ttl)
            self._checks[check_id] = check
            self._set_status(check, status, note, now)

    def record_probe(self, check_id: str, status: CheckStatus, output: str) -> None:
        """The result of an HTTP probe; ignored if the check went away while it was out."""
        now = self.clock.monotonic()
        with self._changed:
            check = self._checks.get(check_id)
            if check is None or check.kind is not CheckKind.HTTP:
                return
            check = replace(check, probing=False)
            self._checks[check_id] = check
            self._set_status(check, status, output, now)

    def due_http_checks(self) -> list[HttpProbe]:
        """The HTTP checks whose interval has come round; each is scheduled for the next one."""
        now = self.clock.monotonic()
        probes = []
        with self._changed:
            for check in list(self._checks.values()):
                if (check.kind is not CheckKind.HTTP or check.probing
                        or check.next_probe_at is None or check.next_probe_at > now):
                    continue
                definition = check.definition
                assert definition.http is not None and definition.interval is not None
                self._checks[check.id] = replace(
                    check, probing=True, next_probe_at=now + definition.interval)
                probes.append(HttpProbe(
                    check_id=check.id, url=definition.http, method=definition.method,
                    header=definition.header,
                    timeout=definition.timeout or DEFAULT_HTTP_TIMEOUT))
        return probes

    def sweep(self) -> list[str]:
        """Expire overdue TTL checks, then deregister services critical for too long.

        Returns the IDs of the services deregistered.
        """
        now = self.clock.monotonic()
        reaped = []
        with self._changed:
            for check in list(self._checks.values()):
                expired_at = check.expires_at
                if expired_at is not None and expired_at <= now:
                    self._checks[check.id] = check = replace(check, expires_at=None)
                    self._set_status(
                        check, CheckStatus.CRITICAL,
                        f"TTL expired (last output before timeout follows): {check.output}",
                        expired_at)
            for check in list(self._checks.values()):
                limit = check.definition.deregister_after
                if (limit is not None and check.critical_since is not None
                        and now - check.critical_since >= limit
                        and check.service_id in self._services):
                    self._remove_service(check.service_id)
                    reaped.append(check.service_id)
        return reaped

    # ---- reads ----------------------------------------------------------------------------

    def services(self) -> list[Service]:
        with self._changed:
            return sorted(self._services.values(), key=lambda service: service.id)

    def checks(self) -> list[Check]:
        with self._changed:
            return sorted(self._checks.values(), key=lambda check: check.id)

    def service_names(self) -> tuple[int, dict[str, list[str]]]:
        """Every service name with the union of its instances' tags, and the index."""
        with self._changed:
            names: dict[str, set[str]] = {}
            for service in self._services.values():
                names.setdefault(service.name, set()).update(service.tags)
            return self._names_index, {name: sorted(tags) for name, tags in sorted(names.items())}

    def instances(self, name: str, tags: tuple[str, ...] = ()) -> tuple[int, list[Service]]:
        with self._changed:
            found = [service for service in self.services()
                     if service.name == name and set(tags) <= set(service.tags)]
            return self.index_of(name), found

    def health(self, name: str, *, passing_only: bool = False,
               tags: tuple[str, ...] = ()) -> tuple[int, list[HealthEntry]]:
        """The instances of `name` with their checks; `passing_only` drops any not all passing."""
        with self._changed:
            index, services = self.instances(name, tags)
            entries = [HealthEntry(service, tuple(
                check for check in self.checks() if check.service_id == service.id))
                for service in services]
            if passing_only:
                entries = [entry for entry in entries if entry.passing]
            return index, entries

    def index_of(self, name: str | None = None) -> int:
        """The index of the last change to service `name`, or to the set of services if None.

        A name never registered reports the index of the last change to the set of services,
        as Consul does, so the query wakes when it appears.
        """
        with self._changed:
            if name is None:
                return self._names_index
            return self._name_index.get(name, self._names_index)

    def wait_for_change(self, after_index: int, timeout: float, name: str | None = None) -> int:
        """Block until `index_of(name)` passes `after_index`, or `timeout` seconds pass."""
        with self._changed:
            self._changed.wait_for(lambda: self.index_of(name) > after_index, timeout)
            return self.index_of(name)

    # ---- internals (call with the lock held) ----------------------------------------------

    def _bump(self) -> int:
        self._index += 1
        return self._index

    def _register_checks(self, service: Service, definitions: tuple[CheckDefinition, ...],
                         now: float, index: int) -> set[str]:
        ids = set()
        for number, definition in enumerate(definitions, start=1):
            check_id = definition.check_id or (
                f"service:{service.id}" if len(definitions) == 1
                else f"service:{service.id}:{number}")
            ids.add(check_id)
            previous = self._checks.get(check_id)
            if definition.status is not None or previous is None:
                status = definition.status or CheckStatus.CRITICAL
                output = ""
                critical_since = now if status is CheckStatus.CRITICAL else None
            else:
                status, output = previous.status, previous.output
                critical_since = previous.critical_since
            self._checks[check_id] = Check(
                id=check_id, name=definition.name or f"Service '{service.name}' check",
                service_id=service.id, service_name=service.name, service_tags=service.tags,
                definition=definition, status=status, output=output,
                create_index=previous.create_index if previous else index, modify_index=index,
                critical_since=critical_since,
                expires_at=now + definition.ttl if definition.ttl is not None else None,
                next_probe_at=now if definition.http is not None else None)
        return ids

    def _remove_service(self, service_id: str) -> None:
        service = self._services.pop(service_id)
        for check in list(self._checks.values()):
            if check.service_id == service_id:
                del self._checks[check.id]
        index = self._bump()
        self._names_index = index
        self._name_index[service.name] = index
        self._changed.notify_all()

    def _set_status(self, check: Check, status: CheckStatus, output: str, now: float) -> None:
        """Record a check's new status (as of clock time `now`); only a change of status moves
        the index."""
        output = output[:MAX_OUTPUT]
        if status is check.status:
            self._checks[check.id] = replace(check, output=output)
            return
        index = self._bump()
        self._checks[check.id] = replace(
            check, status=status, output=output, modify_index=index,
            critical_since=now if status is CheckStatus.CRITICAL else None)
        self._name_index[check.service_name] = index
        self._changed.notify_all()

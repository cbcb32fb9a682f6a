"""The registry's catalog on a fake clock: check states, TTL expiry, reaping, indexes, waiting."""

from __future__ import annotations

import threading
import time

import pytest

from patterns.clock import FakeClock
from services.registry.domain import (
    Catalog,
    CheckDefinition,
    CheckStatus,
    InvalidDefinition,
    NotATtlCheck,
    ServiceDefinition,
    UnknownCheck,
    UnknownService,
    status_for_http_code,
)
from services.registry.wire import BadRequest, decode_service, format_duration, parse_duration


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def catalog(clock: FakeClock) -> Catalog:
    return Catalog(clock)


def web(service_id: str = "web-1", *checks: CheckDefinition, **fields) -> ServiceDefinition:
    return ServiceDefinition(name="web", service_id=service_id, port=8080,
                             checks=checks or (CheckDefinition(ttl=10),), **fields)


def status_of(catalog: Catalog, check_id: str) -> CheckStatus:
    return next(check.status for check in catalog.checks() if check.id == check_id)


def test_a_check_starts_critical_and_a_pass_makes_the_instance_healthy(catalog):
    catalog.register(web())
    assert status_of(catalog, "service:web-1") is CheckStatus.CRITICAL
    assert catalog.health("web", passing_only=True)[1] == []

    catalog.update_ttl("service:web-1", CheckStatus.PASSING, "all good")

    _, [entry] = catalog.health("web", passing_only=True)
    assert entry.service.id == "web-1" and entry.checks[0].output == "all good"


def test_warning_is_not_passing(catalog):
    catalog.register(web())
    catalog.update_ttl("service:web-1", CheckStatus.WARNING)
    assert catalog.health("web", passing_only=True)[1] == []
    assert [entry.service.id for entry in catalog.health("web")[1]] == ["web-1"]


def test_ttl_not_refreshed_in_time_turns_critical(catalog, clock):
    catalog.register(web())
    catalog.update_ttl("service:web-1", CheckStatus.PASSING, "beat")
    clock.advance(9.9)
    catalog.sweep()
    assert status_of(catalog, "service:web-1") is CheckStatus.PASSING

    clock.advance(0.1)
    catalog.sweep()

    [check] = catalog.checks()
    assert check.status is CheckStatus.CRITICAL
    assert check.output == "TTL expired (last output before timeout follows): beat"


def test_each_pass_restarts_the_ttl_timer(catalog, clock):
    catalog.register(web())
    for _ in range(5):
        catalog.update_ttl("service:web-1", CheckStatus.PASSING)
        clock.advance(8)
        catalog.sweep()
    assert status_of(catalog, "service:web-1") is CheckStatus.PASSING


def test_a_service_critical_for_longer_than_deregister_after_is_removed(catalog, clock):
    catalog.register(web("web-1", CheckDefinition(ttl=5, deregister_after=30)))
    catalog.register(web("web-2", CheckDefinition(ttl=5, deregister_after=30)))
    catalog.update_ttl("service:web-2", CheckStatus.PASSING)
    clock.advance(29)
    assert catalog.sweep() == []

    clock.advance(1)
    assert catalog.sweep() == ["web-1"]  # critical since registration; web-2 only since t=5
    assert [service.id for service in catalog.services()] == ["web-2"]
    assert [check.id for check in catalog.checks()] == ["service:web-2"]

    clock.advance(5)
    assert catalog.sweep() == ["web-2"]


def test_a_pass_in_time_stops_the_reaping(catalog, clock):
    catalog.register(web("web-1", CheckDefinition(ttl=5, deregister_after=30)))
    clock.advance(20)
    catalog.update_ttl("service:web-1", CheckStatus.PASSING)
    clock.advance(20)  # critical again since t=25, for 15 s only
    assert catalog.sweep() == []
    assert status_of(catalog, "service:web-1") is CheckStatus.CRITICAL


def test_every_change_moves_the_index_of_the_service_it_touches(catalog):
    start = catalog.index_of("web")
    catalog.register(web())
    registered = catalog.index_of("web")
    catalog.update_ttl("service:web-1", CheckStatus.PASSING)
    passed = catalog.index_of("web")
    catalog.deregister("web-1")
    assert start < registered < passed < catalog.index_of("web")


def test_a_heartbeat_that_changes_no_status_moves_no_index(catalog):
    catalog.register(web())
    catalog.update_ttl("service:web-1", CheckStatus.PASSING, "beat 1")
    before = catalog.index_of("web")
    catalog.update_ttl("service:web-1", CheckStatus.PASSING, "beat 2")
    assert catalog.index_of("web") == before
    assert catalog.checks()[0].output == "beat 2"


def test_changes_to_one_service_leave_another_services_index_alone(catalog):
    catalog.register(web())
    catalog.register(ServiceDefinition(name="api", checks=(CheckDefinition(ttl=10),)))
    web_index, names_index = catalog.index_of("web"), catalog.index_of(None)
    catalog.update_ttl("service:api", CheckStatus.PASSING)
    assert catalog.index_of("web") == web_index
    assert catalog.index_of(None) == names_index  # the set of services did not change
    assert catalog.index_of("never-registered") == names_index


def test_catalog_lists_service_names_with_their_tags(catalog):
    catalog.register(web("web-1", tags=("v1", "blue")))
    catalog.register(web("web-2", tags=("v2",)))
    _, names = catalog.service_names()
    assert names == {"web": ["blue", "v1", "v2"]}
    _, tagged = catalog.instances("web", ("v2",))
    assert [service.id for service in tagged] == ["web-2"]


def test_re_registering_keeps_check_status_unless_told_otherwise(catalog):
    catalog.register(web())
    catalog.update_ttl("service:web-1", CheckStatus.PASSING)
    catalog.register(web())
    assert status_of(catalog, "service:web-1") is CheckStatus.PASSING

    catalog.register(web("web-1", CheckDefinition(ttl=10, check_id="other")),
                     replace_existing_checks=True)
    assert [check.id for check in catalog.checks()] == ["other"]


def test_several_checks_get_numbered_ids_and_all_must_pass(catalog):
    catalog.register(web("web-1", CheckDefinition(ttl=10), CheckDefinition(ttl=10)))
    catalog.update_ttl("service:web-1:1", CheckStatus.PASSING)
    assert catalog.health("web", passing_only=True)[1] == []
    catalog.update_ttl("service:web-1:2", CheckStatus.PASSING)
    assert len(catalog.health("web", passing_only=True)[1]) == 1


def test_unknown_ids_and_non_ttl_checks_are_refused(catalog):
    catalog.register(web("web-1", CheckDefinition(http="http://127.0.0.1:1/health", interval=1)))
    with pytest.raises(UnknownService):
        catalog.deregister("nope")
    with pytest.raises(UnknownCheck):
        catalog.update_ttl("nope", CheckStatus.PASSING)
    with pytest.raises(NotATtlCheck):
        catalog.update_ttl("service:web-1", CheckStatus.PASSING)


def test_http_checks_are_due_at_once_then_every_interval(catalog, clock):
    catalog.register(web("web-1", CheckDefinition(http="http://127.0.0.1:1/health", interval=2)))
    [probe] = catalog.due_http_checks()
    assert probe.url == "http://127.0.0.1:1/health" and probe.timeout == 5.0
    clock.advance(5)
    assert catalog.due_http_checks() == []  # still out: never two probes of one check at once

    catalog.record_probe(probe.check_id, CheckStatus.PASSING, "HTTP GET ...: 200 OK")
    assert status_of(catalog, "service:web-1") is CheckStatus.PASSING
    assert len(catalog.due_http_checks()) == 1
    clock.advance(1.9)
    catalog.record_probe(probe.check_id, CheckStatus.CRITICAL, "HTTP GET ...: 500")
    assert catalog.due_http_checks() == []
    clock.advance(0.1)
    assert len(catalog.due_http_checks()) == 1


def test_http_answers_map_to_check_states():
    assert status_for_http_code(204) is CheckStatus.PASSING
    assert status_for_http_code(429) is CheckStatus.WARNING
    assert status_for_http_code(503) is CheckStatus.CRITICAL
    assert status_for_http_code(302) is CheckStatus.CRITICAL


def test_wait_for_change_returns_at_once_when_the_index_has_moved(catalog):
    catalog.register(web())
    assert catalog.wait_for_change(1, timeout=5, name="web") == catalog.index_of("web")


def test_wait_for_change_times_out_when_nothing_changes(catalog):
    catalog.register(web())
    index = catalog.index_of("web")
    started = time.monotonic()
    assert catalog.wait_for_change(index, timeout=0.2, name="web") == index
    assert time.monotonic() - started >= 0.2


def test_wait_for_change_wakes_when_its_service_changes(catalog):
    catalog.register(web())
    index = catalog.index_of("web")
    threading.Timer(0.1, catalog.update_ttl, ("service:web-1", CheckStatus.PASSING)).start()
    started = time.monotonic()
    assert catalog.wait_for_change(index, timeout=10, name="web") > index
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("definition, message", [
    (dict(ttl=0), "TTL must be > 0"),
    (dict(), "TTL must be > 0"),
    (dict(http="http://x/", interval=None), "Interval must be > 0"),
    (dict(ttl=5, interval=5), "cannot both be specified"),
])
def test_bad_check_definitions_are_refused(definition, message):
    with pytest.raises(InvalidDefinition, match=message):
        CheckDefinition(**definition)


def test_bad_service_definitions_are_refused():
    with pytest.raises(InvalidDefinition, match="Missing service name"):
        ServiceDefinition(name="")
    with pytest.raises(InvalidDefinition, match="Invalid service address"):
        ServiceDefinition(name="web", address="0.0.0.0")


def test_request_bodies_match_keys_ignoring_case_and_underscores():
    definition = decode_service(b'''{"name": "web", "id": "web-1", "port": 80, "Tags": ["a"],
        "checks": [{"ttl": "10s", "deregister_critical_service_after": "1m30s"}],
        "Check": {"HTTP": "http://127.0.0.1/health", "Interval": "500ms"}}''')
    assert definition.id == "web-1" and definition.tags == ("a",)
    http, ttl = definition.checks
    assert http.interval == 0.5 and ttl.ttl == 10 and ttl.deregister_after == 90


@pytest.mark.parametrize("body, message", [
    (b"{oops", "Request decode failed"),
    (b"[]", "must be a JSON object"),
    (b'{"Name": "web", "Port": "80"}', "Port must be a JSON integer"),
    (b'{"Name": "web", "Check": {"TTL": "soon"}}', 'invalid duration "soon"'),
    (b'{"Name": "web", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s"}}', "not TCP checks"),
    (b'{"Name": "web", "Check": {"TTL": "1s", "Status": "fine"}}', "Status for checks"),
])
def test_unreadable_bodies_say_what_is_wrong(body, message):
    with pytest.raises(BadRequest, match=message):
        decode_service(body)


def test_go_durations_both_ways():
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0
    with pytest.raises(ValueError):
        parse_duration("10")
    assert [format_duration(s) for s in (0.5, 10, 90, 3600)] == ["500ms", "10s", "1m30s",
                                                                  "1h0m0s"]

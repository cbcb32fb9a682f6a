"""Client-side load balancing: round robin, random, the short cache, ejection and failover."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from patterns.clock import FakeClock
from patterns.discovery import Balancer, Instance, NoHealthyInstance, RegistryUnavailable

A = Instance("inventory-a", "10.0.0.1", 3004)
B = Instance("inventory-b", "10.0.0.2", 3004)
C = Instance("inventory-c", "10.0.0.3", 3004)


class FakeRegistry:
    """Answers lookups from a list the test changes; counts lookups; can be 'down'."""

    def __init__(self, *instances: Instance) -> None:
        self.instances = list(instances)
        self.lookups = 0
        self.down = False

    def healthy(self, service: str) -> list[Instance]:
        self.lookups += 1
        if self.down:
            raise RegistryUnavailable("connection refused")
        return list(self.instances)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def balancer(registry: FakeRegistry, clock: FakeClock, **knobs) -> Balancer:
    return Balancer("inventory", registry.healthy, clock=clock, **knobs)


def test_round_robin_takes_turns_in_a_stable_order(clock):
    lb = balancer(FakeRegistry(C, A, B), clock)
    assert [lb() for _ in range(6)] == [i.base_url for i in (A, B, C, A, B, C)]


def test_random_draws_from_the_injected_rng(clock):
    lb = balancer(FakeRegistry(A, B, C), clock, strategy="random", rng=random.Random(7))
    expected = random.Random(7)
    assert [lb() for _ in range(20)] == [expected.choice((A, B, C)).base_url for _ in range(20)]
    assert len(set(lb() for _ in range(50))) == 3


def test_the_list_is_cached_for_cache_for_seconds(clock):
    registry = FakeRegistry(A)
    lb = balancer(registry, clock, cache_for=3)
    for _ in range(10):
        lb()
    assert lb.instances() == (A,) and registry.lookups == 1

    registry.instances = [B]
    clock.advance(2.9)
    assert lb() == A.base_url  # still the cached list
    clock.advance(0.1)
    assert lb() == B.base_url and registry.lookups == 2


def test_the_last_list_is_kept_while_the_registry_is_down(clock):
    registry = FakeRegistry(A, B)
    lb = balancer(registry, clock, cache_for=3)
    lb()
    registry.down = True
    clock.advance(3)
    assert {lb() for _ in range(4)} == {A.base_url, B.base_url}
    assert registry.lookups == 2  # asked once, then not again until cache_for has passed
    clock.advance(3)
    lb()
    assert registry.lookups == 3


def test_no_instance_is_an_error_that_says_so(clock):
    with pytest.raises(NoHealthyInstance, match="no healthy instance of inventory"):
        balancer(FakeRegistry(), clock)()
    registry = FakeRegistry(A)
    registry.down = True
    with pytest.raises(NoHealthyInstance, match="registry unreachable"):
        balancer(registry, clock)()


def test_a_failed_instance_is_skipped_for_eject_for_seconds(clock):
    lb = balancer(FakeRegistry(A, B, C), clock, eject_for=10, cache_for=60)
    lb.report_failure(f"{B.base_url}/api/v1/stock/sku-1")  # any URL on the instance
    assert Counter(lb() for _ in range(6)) == {A.base_url: 3, C.base_url: 3}
    clock.advance(10)
    assert B.base_url in {lb() for _ in range(3)}


def test_when_every_instance_is_ejected_all_are_tried_again(clock):
    lb = balancer(FakeRegistry(A, B), clock)
    lb.report_failure(A.base_url)
    lb.report_failure(B.base_url)
    assert {lb() for _ in range(4)} == {A.base_url, B.base_url}


def test_call_fails_over_to_another_instance(clock):
    lb = balancer(FakeRegistry(A, B, C), clock)
    tried = []

    def fetch(base_url: str) -> str:
        tried.append(base_url)
        if base_url == A.base_url:
            raise ConnectionError("refused")
        return f"stock from {base_url}"

    answer = lb.call(fetch)
    assert tried[0] == A.base_url and tried[1] in (B.base_url, C.base_url)
    assert answer == f"stock from {tried[1]}" and len(tried) == 2
    # A is now ejected: the next calls go to B and C only.
    assert {lb.call(fetch) for _ in range(4)} == {f"stock from {B.base_url}",
                                                  f"stock from {C.base_url}"}


def test_call_gives_up_after_every_instance_failed(clock):
    lb = balancer(FakeRegistry(A, B), clock)
    tried = []

    def always_down(base_url: str) -> str:
        tried.append(base_url)
        raise TimeoutError(base_url)

    with pytest.raises(TimeoutError):
        lb.call(always_down, attempts=5)
    assert sorted(tried) == [A.base_url, B.base_url]  # each once, never the same one twice


def test_call_does_not_fail_over_on_an_answer_that_is_not_transient(clock):
    lb = balancer(FakeRegistry(A, B), clock)
    tried = []

    def bad_request(base_url: str) -> str:
        tried.append(base_url)
        raise ValueError("400: sku is required")

    with pytest.raises(ValueError):
        lb.call(bad_request)
    assert tried == [A.base_url]


def test_base_url_comes_from_the_health_entry_with_the_node_address_as_fallback():
    entry = {"Node": {"Address": "10.1.1.1"},
             "Service": {"ID": "users-1", "Address": "", "Port": 3001, "Tags": ["v1"]}}
    assert Instance.from_health_entry(entry).base_url == "http://10.1.1.1:3001"
    entry["Service"]["Address"] = "::1"
    assert Instance.from_health_entry(entry).base_url == "http://[::1]:3001"


def test_unknown_strategy_is_refused(clock):
    with pytest.raises(ValueError, match="round_robin"):
        balancer(FakeRegistry(A), clock, strategy="least_loaded")

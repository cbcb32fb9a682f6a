"""The world the balancer lives in: a registry of instances, some of them failing, a fake clock.

Your `Balancer` is given a `Registry` (ask it `instances()` for the ids registered right now)
and a clock (`clock.monotonic()`; time moves only when the grader says so). It raises
`NoHealthyInstance` when there is nobody to call. Everything else here is the grader's side:
`run()` plays a schedule — calls, instances going down, flapping, joining, leaving, time
passing — and checks each pick against a model of what a correct balancer must do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from exercises.grading import Trace

Health = Literal["up", "down", "flaky"]


class NoHealthyInstance(Exception):
    """No instance can take a call: none registered, or every one is ejected."""


class Registry:
    """Who is registered right now, as the service registry (Consul) would answer."""

    def __init__(self, instances: list[str]) -> None:
        self._instances = list(instances)
        self.asked = 0

    def instances(self) -> list[str]:
        """The ids of the registered instances, e.g. ["inventory-1", "inventory-2"]."""
        self.asked += 1
        return list(self._instances)


# -- schedules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calls:
    """`count` calls in a row: pick(), call the instance, report() how it went."""
    count: int


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class SetHealth:
    """From now on the instance (by position among the registered ones) answers like this;
    a flaky one fails every other call (fail, ok, fail, ...), never twice in a row."""
    instance: int
    health: Health


@dataclass(frozen=True)
class Join:
    """A new instance registers."""


@dataclass(frozen=True)
class Leave:
    """The instance (by position among the registered ones) deregisters."""
    instance: int


Action = Calls | Wait | SetHealth | Join | Leave


@dataclass(frozen=True)
class Settings:
    max_failures: int
    eject_for: float
    refresh_every: float


@dataclass(frozen=True)
class Schedule:
    settings: Settings
    instances: int  # registered at the start
    actions: tuple[Action, ...]


# -- the model of a correct balancer, and the run ----------------------------------------------


class Model:
    """What a correct balancer knows: consecutive failures and ejections per instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.failures: Counter[str] = Counter()
        self.ejected_until: dict[str, float] = {}
        self.history: dict[str, list[str]] = {}

    def ejected(self, instance: str, now: float) -> bool:
        return now < self.ejected_until.get(instance, -math.inf)

    def was_ejected(self, instance: str) -> bool:
        return instance in self.ejected_until

    def record(self, instance: str, ok: bool, now: float) -> str | None:
        """Count one result; returns a note when it ejects the instance."""
        self.history.setdefault(instance, []).append("ok" if ok else "fail")
        if ok:
            self.failures[instance] = 0
            return None
        self.failures[instance] += 1
        if self.failures[instance] < self.settings.max_failures:
            return None
        self.failures[instance] = 0  # back after the cool-off with a clean slate
        until = self.ejected_until[instance] = now + self.settings.eject_for
        return f"{self.settings.max_failures} failures in a row: ejected until t={until:g}"

    def recent(self, instance: str) -> str:
        return ", ".join(self.history.get(instance, [])[-4:]) or "no calls yet"


class World:
    """One run of a schedule against the learner's balancer, checking one property."""

    def __init__(self, learner: ModuleType, schedule: Schedule, trace: Trace, watch: str) -> None:
        self.trace = trace
        self.clock = trace.clock
        self.watch = watch
        self.settings = schedule.settings
        self.model = Model(schedule.settings)
        self.serial = 0
        registered = [self._new_id() for _ in range(schedule.instances)]
        self.registry = Registry(registered)
        self.health: dict[str, Health] = {name: "up" for name in registered}
        self.calls_to: Counter[str] = Counter()  # while flaky, which call this is
        self.left: set[str] = set()
        self.window: Counter[str] = Counter()
        self.window_set: tuple[str, ...] = ()
        s = schedule.settings
        trace.given(max_failures=s.max_failures, eject_for=s.eject_for,
                    refresh_every=s.refresh_every)
        trace.step(f"registry: {', '.join(registered) or 'nobody'}")
        self.balancer = learner.Balancer(self.registry, self.clock, max_failures=s.max_failures,
                                         eject_for=s.eject_for, refresh_every=s.refresh_every)
        trace.outcome("Balancer(...) created")
        self.actions = schedule.actions

    def _new_id(self) -> str:
        self.serial += 1
        return f"inventory-{self.serial}"

    def _registered(self) -> list[str]:
        return self.registry._instances

    def _nth(self, position: int) -> str | None:
        registered = self._registered()
        return registered[position % len(registered)] if registered else None

    def check(self, prop: str, ok: bool, expected: str, got: str) -> None:
        """Judge one promise, if it is the one this run watches."""
        if prop == self.watch:
            self.trace.expect(ok, expected=expected, got=got)

    def run(self) -> None:
        for action in self.actions:
            if isinstance(action, Calls):
                for _ in range(action.count):
                    self.call()
            elif isinstance(action, Wait):
                self.trace.advance(action.seconds)
            elif isinstance(action, SetHealth):
                name = self._nth(action.instance)
                if name is not None:
                    self.trace.step(f"{name} is now {action.health}")
                    self.health[name] = action.health
                    self.calls_to[name] = 0
            elif isinstance(action, Join):
                name = self._new_id()
                self._registered().append(name)
                self.health[name] = "up"
                self.settle(f"{name} registers")
            elif isinstance(action, Leave):
                name = self._nth(action.instance)
                if name is not None:
                    self._registered().remove(name)
                    self.left.add(name)
                    self.settle(f"{name} deregisters")

    def settle(self, what: str) -> None:
        """A registry change, then refresh_every seconds so every balancer must know it."""
        self.trace.step(f"registry: {what}; clock +{self.settings.refresh_every:g}s "
                        f"(refresh_every) before the next call")
        self.clock.advance(self.settings.refresh_every)

    def eligible(self) -> tuple[str, ...]:
        now = self.clock.monotonic()
        return tuple(name for name in self._registered() if not self.model.ejected(name, now))

    def call(self) -> None:
        eligible = self.eligible()
        if eligible != self.window_set:
            self.window_set, self.window = eligible, Counter()
        self.trace.step("pick()")
        try:
            picked = self.balancer.pick()
        except NoHealthyInstance:
            self.trace.outcome("raised NoHealthyInstance")
            if eligible:
                self.unfair(eligible, picked=None)
            return
        self.trace.outcome(repr(picked))
        now = self.clock.monotonic()
        if picked not in self.health:
            self.trace.expect(False, expected="an instance id the registry gave you",
                              got=f"pick() returned {picked!r}")
        got = f"pick() returned {picked} at t={now:g}"
        if not eligible and self._registered():
            self.check("ejected_gets_no_traffic", False,
                       "NoHealthyInstance: every registered instance is ejected", got)
        self.check("deregistered_gets_no_traffic", picked not in self.left,
                   f"never {picked}: it deregistered more than refresh_every ago", got)
        if self.model.ejected(picked, now):
            self.check("ejected_gets_no_traffic", False,
                       f"no call to {picked} before t={self.model.ejected_until[picked]:g} "
                       f"(ejected after {self.settings.max_failures} failures in a row)", got)
        elif picked not in self.left:
            self.check("ejected_gets_no_traffic", True, "", "")
        if picked not in eligible:
            self.respond(picked)
            return
        self.window[picked] += 1
        self.unfair(eligible, picked)
        self.respond(picked)

    def unfair(self, eligible: tuple[str, ...], picked: str | None) -> None:
        """Round robin: over any stretch of calls with the same eligible instances, no instance
        gets two calls more than another."""
        counts = {name: self.window[name] for name in eligible}
        starved = min(counts, key=counts.__getitem__)
        fair = picked is not None and max(counts.values()) - counts[starved] <= 1
        if fair:
            self.check("round_robin_fair", True, "", "")
            if any(self.model.was_ejected(name) for name in eligible):
                self.check("back_after_cool_off", True, "", "")
            return
        prop = "back_after_cool_off" if self.model.was_ejected(starved) else "round_robin_fair"
        calls = ", ".join(f"{name}: {count}" for name, count in counts.items())
        got = (f"NoHealthyInstance while {', '.join(eligible)} could take calls" if picked is None
               else f"calls since the eligible set last changed: {calls}; {starved}'s last "
                    f"results: {self.model.recent(starved)}")
        if prop == "back_after_cool_off":
            until = self.model.ejected_until[starved]
            self.check(prop, False,
                       f"{starved} back in the rotation from t={until:g} (its cool-off ended)", got)
        else:
            self.check(prop, False,
                       f"calls spread evenly (round robin) over {', '.join(eligible)}", got)

    def respond(self, picked: str) -> None:
        if picked not in self.health or picked in self.left:
            ok, why = False, "connection refused (not running)"
        else:
            health = self.health[picked]
            self.calls_to[picked] += 1
            ok = health == "up" or (health == "flaky" and self.calls_to[picked] % 2 == 0)
            why = "ok" if ok else f"fails ({health})"
        self.trace.outcome(f"call {why}; report({picked!r}, ok={ok})")
        self.balancer.report(picked, ok)
        note = self.model.record(picked, ok, self.clock.monotonic())
        if note:
            self.trace.outcome(note)


def run(learner: ModuleType, schedule: Schedule, trace: Trace, watch: str) -> None:
    """Play `schedule` against the learner's Balancer; raise Expectation when `watch` breaks."""
    World(learner, schedule, trace, watch).run()

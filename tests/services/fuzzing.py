"""Schemathesis against a service's own OpenAPI document, in this process: generated requests,
valid and invalid, must never get a 5xx.

(`schemathesis.pytest.from_fixture` fails under pytest 9 — it sets `node._nodeid` — so each
operation's strategy is driven by a plain Hypothesis test here.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

BOTH_MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def operations_of(app: Flask) -> set[tuple[str, str]]:
    """Every (METHOD, path) the app's OpenAPI document declares."""
    document = app.test_client().get("/openapi.json").get_json()
    return {(method.upper(), path) for path, methods in document["paths"].items()
            for method in methods}


Headers = Mapping[str, str] | Callable[[], Mapping[str, str]]


def fuzz_operation(app: Flask, method: str, path: str, headers: Headers, *,
                   modes: Iterable[GenerationMode] = BOTH_MODES, max_examples: int = 25,
                   after_each: Callable[[], None] | None = None) -> None:
    """Throw generated requests at one operation; fails on the first 5xx.

    `headers` may be a function, called for every case (a fresh Idempotency-Key each time);
    `after_each` runs after every case, to undo what a case may have changed for the next."""
    operation = schemathesis.openapi.from_wsgi("/openapi.json", app)[path][method]
    cases = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def never_a_server_error(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(headers=dict(headers() if callable(headers) else headers),
                                   checks=[not_a_server_error])
        finally:
            if after_each is not None:
                after_each()

    never_a_server_error()


def fuzz_every_operation(app: Flask, headers: Headers, *,
                         modes: Iterable[GenerationMode] = BOTH_MODES, max_examples: int = 20,
                         after_each: Callable[[], None] | None = None) -> set[tuple[str, str]]:
    """Fuzz every declared operation; returns what was fuzzed, for the test to check."""
    operations = operations_of(app)
    for method, path in sorted(operations):
        fuzz_operation(app, method, path, headers, modes=list(modes), max_examples=max_examples,
                       after_each=after_each)
    return operations

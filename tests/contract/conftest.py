"""What every contract test shares.

The contracts are about our own plumbing: the headers a `ServiceClient` or the bus sends, the
trace a request to a service starts. Tests elsewhere (tests/services) build the services' apps
in this process, and that sets up OpenTelemetry's instrumentation of requests, urllib3, pika
and pymongo for the rest of the run; it would then add a `traceparent` of its own to every
call and message a contract test makes. Each contract test runs with it suppressed, so the
suite says the same whatever ran before it in the process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation


@pytest.fixture(autouse=True)
def _no_instrumentation_from_other_tests() -> Iterator[None]:
    with suppress_instrumentation():
        yield

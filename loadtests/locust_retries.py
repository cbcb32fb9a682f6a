"""Locust users calling the flaky service (loadtests/flaky.py) through patterns.http.ServiceClient
with two retry policies, one user class each:

- NaiveCaller: up to 3 attempts, straight away, no budget — what a quick `for` loop does;
- BudgetedCaller: up to 3 attempts with exponential backoff and full jitter (50 ms base) under
  a RetryBudget shared by all its users: retries may be at most 8 % of the requests of the last
  10 s, with no per-second reserve. (A ratio of exactly 10 % puts the amplification on the
  1.1 line itself, give or take one retry per window.)

Each call is one Locust request named after its policy (loadtests/names.py); its failure means
the client saw an error after all the attempts it was allowed. The flaky service counts
requests (one fresh `X-Request-Id` per call, repeated on its retries) and attempts per policy
(the path says which).

Run by the retries scenario as `locust -f loadtests/locust_retries.py --host FLAKY_URL`.
"""

from __future__ import annotations

import time
import uuid

from locust import User, constant, task

from loadtests.names import BUDGETED, NAIVE
from patterns.http import ServiceClient
from patterns.retry import Retry, RetryBudget


class Caller(User):
    abstract = True
    wait_time = constant(0)
    name: str
    path: str
    retry: Retry

    def on_start(self) -> None:
        self.client = ServiceClient("flaky", self.host, retry=self.retry, read_timeout=5,
                                    context=lambda: {"X-Request-Id": uuid.uuid4().hex})

    @task
    def call(self) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        try:
            self.client.get_json(self.path)
        except Exception as exc:  # reported to Locust as this request's failure
            error = exc
        self.environment.events.request.fire(
            request_type="GET", name=self.name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=error, context={})


class NaiveCaller(Caller):
    name, path = NAIVE, "/work/naive"
    retry = Retry(attempts=3, base_delay=0.0, max_delay=0.0)


class BudgetedCaller(Caller):
    name, path = BUDGETED, "/work/budgeted"
    retry = Retry(attempts=3, base_delay=0.05, max_delay=1.0,
                  budget=RetryBudget(ratio=0.08, min_per_second=0.0))

"""The Redis-backed token bucket against the real Redis at REDIS_URL (default 127.0.0.1:6379)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from patterns.clock import FakeClock
from patterns.ratelimit import RedisTokenBucket, TokenBucket
from tests.helpers import missing

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing(f"no Redis reachable at {REDIS_URL} ({exc}); start one or set REDIS_URL")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A key prefix no other test run shares; every key under it is deleted afterwards."""
    prefix = f"microlab-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)


def test_burst_then_refusal_with_the_same_answers_as_the_in_process_bucket(redis_client, prefix):
    shared = RedisTokenBucket(redis_client, 3, 0.5, prefix=prefix, clock=FakeClock(1000))
    local = TokenBucket(3, 0.5, clock=FakeClock(1000))

    assert [shared.take("k") for _ in range(5)] == [local.take("k") for _ in range(5)]
    refused = shared.take("k")
    assert not refused.allowed
    assert refused.headers()["Retry-After"] == "2"


def test_refills_over_time(redis_client, prefix):
    clock = FakeClock(1000)
    limiter = RedisTokenBucket(redis_client, 2, 1, prefix=prefix, clock=clock)
    limiter.take("k")
    limiter.take("k")
    assert not limiter.take("k").allowed

    clock.advance(1)
    assert limiter.take("k").allowed
    clock.advance(10)
    assert limiter.take("k").remaining == 1


def test_keys_are_isolated_and_expire_once_full_again(redis_client, prefix):
    limiter = RedisTokenBucket(redis_client, 1, 10, prefix=prefix)
    assert limiter.take("alice").allowed
    assert not limiter.take("alice").allowed
    assert limiter.take("bob").allowed

    ttl_ms = redis_client.pttl(prefix + "alice")
    assert 0 < ttl_ms <= 200, "an empty bucket refills in 0.1 s, so its key lives no longer"


def test_uses_the_redis_server_clock_when_no_clock_is_given(redis_client, prefix):
    limiter = RedisTokenBucket(redis_client, 1, 20, prefix=prefix)
    assert limiter.take("k").allowed
    assert not limiter.take("k").allowed
    time.sleep(0.1)  # 20 tokens/s: one is back after 50 ms
    assert limiter.take("k").allowed


# Each worker waits for a shared start time, then tries 100 times as fast as it can.
WORKER = """
import sys, time, redis
from patterns.ratelimit import RedisTokenBucket
url, prefix, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
limiter = RedisTokenBucket(redis.Redis.from_url(url), 50, 0.0001, prefix=prefix)
time.sleep(max(0.0, start_at - time.time()))
print(sum(limiter.take("shared").allowed for _ in range(100)))
"""


def test_two_processes_share_one_bucket_atomically(redis_client, prefix):
    start_at = str(time.time() + 1.5)  # time for both interpreters to start
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, REDIS_URL, prefix, start_at],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    allowed = [int(worker.communicate(timeout=60)[0]) for worker in workers]

    assert all(worker.returncode == 0 for worker in workers)
    assert sum(allowed) == 50, f"capacity 50, but the processes were allowed {allowed}"

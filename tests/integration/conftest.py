"""The whole sandbox, up once per test session on free ports, torn down at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from microlab.launcher import SandboxProcess
from microlab.rabbit import delete_namespace


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory, amqp_url: str) -> Iterator[SandboxProcess]:
    # Breakers retry after 3 s instead of 30, so tests can watch a recovery.
    runner = SandboxProcess(tmp_path_factory.mktemp("sandbox") / "run",
                            env={"BREAKER_RECOVERY_TIMEOUT": "3"})
    runner.start()
    try:
        yield runner
    finally:
        code = runner.stop()
        delete_namespace(amqp_url, runner.namespace)
        assert code == 0, f"microlab up exited with {code}:\n{runner.output()[-3000:]}"

"""The probes the experiments judge by can fail: each is seen to fail when the behaviour it
expects is absent, and to pass when it is there."""

from __future__ import annotations


import pytest

from chaos import probes
from microlab.launcher import SandboxProcess

pytestmark = pytest.mark.slow


def chaos(sandbox: SandboxProcess, *args: str) -> None:
    result = sandbox.cli("chaos", *args, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dependency_unavailable_probe_fails_while_the_database_is_fine(sandbox):
    with pytest.raises(RuntimeError, match="'status': 200"):
        probes.answers_dependency_unavailable(sandbox.urls["gateway"])


def test_dependency_unavailable_probe_passes_while_products_mongo_is_cut(sandbox):
    chaos(sandbox, "down", "products:mongo")
    try:
        seen = probes.answers_dependency_unavailable(sandbox.urls["gateway"])
    finally:
        chaos(sandbox, "up", "products:mongo")
    assert seen["status"] == 503 and seen["dependency"] == "mongo" and seen["retry_after"]


def test_a_real_broker_restart_is_refused_unless_the_broker_is_ours(monkeypatch):
    monkeypatch.delenv(probes.BROKER_IS_OURS, raising=False)
    with pytest.raises(RuntimeError, match="CHAOS_OWN_BROKER=1"):
        probes.stop_broker()


def test_kill_service_names_a_service_that_is_not_running(tmp_path):
    with pytest.raises(RuntimeError, match="payments is not running"):
        probes.kill_service(str(tmp_path), "payments")

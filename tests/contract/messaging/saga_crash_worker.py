"""A saga orchestrator in a process of its own, for the crash-and-recover contract.

    python saga_crash_worker.py '{"mongo_url": ..., "db": ..., "mode": "run"|"recover", ...}'

Optional keys: `saga_id`; `crash_after: [step, state]` — the process dies (os._exit, no cleanup)
right after the log records that step in that state; `crash_inside: step` — it dies inside that
step's action, after the effect and before the log; `fail_step: step` — that action is declined.

Each action and compensation stands for a call to another service: every invocation is written
to `calls`, and its effect to `effects` under the idempotency key, where a duplicate key is the
remote service recognising a repeat. So a test can tell "invoked twice" from "applied twice".
Prints the resulting saga statuses as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from patterns.saga import MongoSagaLog, Saga, SagaOrchestrator, SagaRecord, Step, StepContext

STEPS = ["reserve_stock", "charge", "confirm_order"]
CRASHED = 3


def main(spec: dict[str, Any]) -> None:
    db = MongoClient(spec["mongo_url"])[spec["db"]]

    class CrashingLog(MongoSagaLog):
        def save(self, record: SagaRecord) -> None:
            super().save(record)
            crash = spec.get("crash_after")
            if crash and record.steps.get(crash[0]) == crash[1]:
                os._exit(CRASHED)

    def remote_call(kind: str, step: str):
        def call(context: StepContext) -> dict[str, str] | None:
            db.calls.insert_one({"kind": kind, "step": step, "key": context.idempotency_key})
            if kind == "do" and step == spec.get("fail_step"):
                raise RuntimeError(f"{step} declined")
            try:
                db.effects.insert_one({"_id": context.idempotency_key, "kind": kind, "step": step})
            except DuplicateKeyError:
                pass  # seen this key before: the remote side does nothing the second time
            if kind == "do" and step == spec.get("crash_inside"):
                os._exit(CRASHED)
            return {f"{step}_ref": context.idempotency_key} if kind == "do" else None
        return call

    saga = Saga("place_order", [Step(step, remote_call("do", step), remote_call("undo", step))
                                for step in STEPS])
    orchestrator = SagaOrchestrator(CrashingLog(db.sagas), saga)
    if spec["mode"] == "run":
        records = [orchestrator.run("place_order", {"order_id": spec["saga_id"]},
                                    saga_id=spec["saga_id"])]
    else:
        records = orchestrator.recover()
    print(json.dumps([record.status for record in records]))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

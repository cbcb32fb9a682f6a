"""The careful client of the load tests, experiments and notebooks: it retries an order only
while the answer was lost, and always with the same Idempotency-Key."""

from __future__ import annotations

import pytest
import requests

from microlab import lab


class Answer:
    def __init__(self, status: int, code: str | None = None) -> None:
        self.status_code, self.code = status, code

    def json(self) -> dict:
        return {"error": {"code": self.code}} if self.code else {"id": "ord_1"}


class Session:
    """Answers from a script: an Answer, or an exception to raise."""

    def __init__(self, *script: Answer | Exception) -> None:
        self.script, self.keys = list(script), []

    def post(self, url: str, json: dict, headers: dict, timeout: float) -> Answer:
        self.keys.append(headers["Idempotency-Key"])
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(lab.time, "sleep", lambda seconds: None)


def test_a_lost_answer_is_asked_again_with_the_same_key():
    session = Session(requests.ConnectionError(), Answer(502, "upstream_unreachable"),
                      Answer(409, "order_in_progress"), Answer(201))
    answer, attempts = lab.place_order(session, "http://127.0.0.1:1", [], attempts=4)
    assert (answer.status_code, attempts) == (201, 4)
    assert len(set(session.keys)) == 1 and session.keys[0].startswith("client-")


@pytest.mark.parametrize("status, code", [(201, None), (503, "peer_unavailable"),
                                          (502, "peer_rejected"), (409, "out_of_stock")])
def test_an_answer_is_never_retried(status, code):
    session = Session(Answer(status, code))
    answer, attempts = lab.place_order(session, "http://127.0.0.1:1", [])
    assert (answer.status_code, attempts) == (status, 1)


def test_each_order_has_its_own_key_and_the_last_error_is_raised():
    first, second = Session(Answer(201)), Session(*[requests.Timeout()] * 3)
    lab.place_order(first, "http://127.0.0.1:1", [])
    with pytest.raises(requests.Timeout):
        lab.place_order(second, "http://127.0.0.1:1", [])
    assert len(second.keys) == 3 and first.keys[0] != second.keys[0]

"""What a Redis worker reports of its sessions for front-ends (`OwnershipLoop.
session_reports`, read back by `SessionInfo.from_report`): without Redis, on
fake sessions; a report is rebuilt after a move, its latency at most every 5 s."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.redis import ownership
from adapters.redis.ownership import OwnershipLoop
from adapters.server.voice_host import SessionInfo


class FakeLatency:
    def __init__(self) -> None:
        self.computed = 0
        self.rows: dict[str, Any] = {}

    def as_dict(self) -> dict[str, Any]:
        self.computed += 1
        return dict(self.rows)


class FakeSession:
    def __init__(self) -> None:
        self.closed = False
        self.epoch = self.turn = 0
        self.state = "IDLE"
        self.configuration = ("IDLE",)
        self.contract = {"microphone": "closed", "playback": "stopped"}
        self.chart = SimpleNamespace(name="voice_turn", version_hash="abc")
        self.latency = FakeLatency()

    def move(self, state: str, row: str) -> None:
        self.epoch += 1
        self.turn += 1
        self.state, self.configuration = state, (state,)
        self.latency.rows[row] = {"count": self.epoch}


def reports(loop: OwnershipLoop) -> dict[str, SessionInfo]:
    body = json.loads(f'{{{loop.session_reports()}}}')
    return {sid: SessionInfo.from_report(sid, report, "w1") for sid, report in body.items()}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(ownership.time, "monotonic", lambda: now[0])
    return now


def test_reports_follow_moves_and_refresh_latency_at_most_every_5_s(clock: list[float]) -> None:
    session, gone = FakeSession(), FakeSession()
    sessions = {"s1": session, "s2": gone}
    loop = OwnershipLoop.__new__(OwnershipLoop)        # only what reports need
    loop.manager = SimpleNamespace(sessions=sessions)  # type: ignore[assignment]
    loop._reports = {}
    first = reports(loop)
    assert set(first) == {"s1", "s2"} and first["s1"].state == "IDLE"
    assert first["s1"].worker == "w1" and first["s1"].contract["microphone"] == "closed"
    assert session.latency.computed == 1

    session.move("LISTENING", "IDLE→LISTENING")
    clock[0] += 1.0
    moved = reports(loop)["s1"]
    assert (moved.state, moved.turn, moved.configuration) == ("LISTENING", 1, ("LISTENING",))
    assert moved.latency == {} and session.latency.computed == 1   # summary not yet due

    clock[0] += 1.0
    reports(loop)                     # nothing moved: nothing rebuilt
    assert session.latency.computed == 1
    clock[0] += 4.0                   # due, and the session moved since: refreshed
    assert reports(loop)["s1"].latency == {"IDLE→LISTENING": {"count": 1}}
    assert session.latency.computed == 2
    clock[0] += 10.0                  # due, but nothing new to summarise
    reports(loop)
    assert session.latency.computed == 2

    gone.closed = True
    assert set(reports(loop)) == {"s1"} and set(loop._reports) == {"s1"}

"""The exactly-once bookkeeping of a Redis worker (adapters/redis/dispatch.py),
without Redis: acknowledgements go to a list, events to a fake session table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.redis.dispatch import Dispatcher
from adapters.redis.keys import parse_id
from adapters.redis.owned import OwnedSession, OwnedTable, Phase
from engine.runtime.clock import VirtualClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.session import Ack

SID = "s1"
KEY = "voice:stt:session:{s1}"


class FakeSession:
    def __init__(self) -> None:
        self.closed = False
        self.turn = 0

    def next_correlation_id(self) -> str:
        return f"turn-{self.turn + 1}"


class FakeSessions:
    def __init__(self) -> None:
        self.session: FakeSession | None = FakeSession()
        self.routed: list[tuple[VoiceEvent, Ack | None, str | None]] = []

    def get(self, session_id: str) -> Any:
        return self.session if session_id == SID else None

    def route(self, event: VoiceEvent, *, ack: Ack | None = None,
              entry_id: str | None = None) -> bool:
        self.routed.append((event, ack, entry_id))
        return True


class FakeAcks:
    def __init__(self) -> None:
        self.acked: list[str] = []

    def ack(self, key: str, group: str, entry_id: str) -> None:
        assert key == KEY and group == "g"
        self.acked.append(entry_id)


class Rig:
    def __init__(self, *, max_in_flight: int = 256, saved: str | None = None) -> None:
        self.sink = ListSink()
        self.table = OwnedTable()
        self.sessions = FakeSessions()
        self.acks = FakeAcks()
        self.ended: list[str] = []
        self.stats = dict.fromkeys(("delivered", "acked", "duplicates", "invalid"), 0)
        self.saved = saved
        self.dispatcher = Dispatcher(
            self.table, self.sessions, self.acks, group="g", max_in_flight=max_in_flight,
            log=EventLog(self.sink, VirtualClock(), level="DEBUG"), stats=self.stats,
            on_end=lambda owned, entry_id: self.ended.append(entry_id),
            acked_by_save=lambda sid: self.saved)
        self.owned = OwnedSession(SID, KEY, phase=Phase.LIVE)
        self.table.add(self.owned)

    def lines(self, event_type: str) -> list[dict[str, Any]]:
        return [r for r in self.sink.records if r["event_type"] == event_type]

    async def apply_all(self) -> None:
        """The session applies and saves every routed event, then acks it."""
        routed, self.sessions.routed = self.sessions.routed, []
        for _event, ack, _entry in routed:
            assert ack is not None
            await ack()


def entry(entry_id: str, event: str = "tick", sid: str = SID, **extra: Any) -> tuple[str, Any]:
    body = {"event_type": event, "session_id": sid, "source": "test", "timestamp": 1.0, **extra}
    return entry_id, ["event", json.dumps(body)]


async def test_each_entry_is_routed_once_and_acked_after_its_step() -> None:
    rig = Rig()
    rig.dispatcher.dispatch(rig.owned, [entry("1-0"), entry("2-0")])
    assert [e for _, _, e in rig.sessions.routed] == ["1-0", "2-0"]
    assert rig.owned.in_flight == 2 and rig.acks.acked == []      # nothing acked before the step
    # redelivered (a PEL sweep after a reconnect): already in the inbox, dropped
    rig.dispatcher.dispatch(rig.owned, [entry("2-0")])
    assert len(rig.sessions.routed) == 2 and rig.stats["duplicates"] == 1
    assert rig.lines("event_duplicate")[0]["data"]["applied"] is False
    await rig.apply_all()
    assert rig.acks.acked == ["1-0", "2-0"] and rig.stats["acked"] == 2
    assert rig.owned.floor == parse_id("2-0") and rig.owned.drained.is_set()


async def test_an_entry_its_save_already_acked_is_not_acked_twice() -> None:
    rig = Rig(saved="1-0")
    rig.dispatcher.dispatch(rig.owned, [entry("1-0")])
    await rig.apply_all()
    assert rig.acks.acked == [] and rig.stats["acked"] == 1


async def test_entries_at_or_below_the_snapshot_are_acked_never_applied() -> None:
    rig = Rig()
    rig.owned.floor = rig.owned.delivered = parse_id("5-0")   # resumed from a snapshot at 5-0
    rig.dispatcher.dispatch(rig.owned, [entry("4-0"), entry("5-0"), entry("10-0")])
    assert [e for _, _, e in rig.sessions.routed] == ["10-0"]   # ids compare as numbers
    assert rig.acks.acked == ["4-0", "5-0"]
    assert [r["data"]["applied"] for r in rig.lines("event_duplicate")] == [True, True]


async def test_bad_missing_and_foreign_entries_are_acked_and_logged() -> None:
    rig = Rig()
    rig.dispatcher.dispatch(rig.owned, [
        ("1-0", ["event", "{not json"]), ("2-0", None), entry("3-0", sid="other"),
        ("4-0", ["nothing", "here"]), entry("5-0")])
    assert [e for _, _, e in rig.sessions.routed] == ["5-0"]
    assert rig.acks.acked == ["1-0", "2-0", "3-0", "4-0"]
    assert rig.stats["invalid"] == 3 and len(rig.lines("entry_missing")) == 1
    fields = [r["data"]["field"] for r in rig.lines("event_invalid")]
    assert fields[1:] == ["session_id", "(entry)"]
    assert all(r["session_id"] == SID for r in rig.lines("event_invalid"))


async def test_the_end_marker_ends_the_session_and_what_follows_is_dropped() -> None:
    rig = Rig()
    rig.dispatcher.dispatch(rig.owned, [entry("1-0"), ("2-0", ["control", "end"]), entry("3-0")])
    assert rig.ended == ["2-0"] and rig.owned.ending
    assert [e for _, _, e in rig.sessions.routed] == ["1-0"]
    assert rig.acks.acked == ["3-0"] and len(rig.lines("event_after_end")) == 1


async def test_a_closed_session_leaves_its_entries_pending_for_the_supervisor() -> None:
    rig = Rig()
    assert rig.sessions.session is not None
    rig.sessions.session.closed = True
    rig.dispatcher.dispatch(rig.owned, [entry("1-0"), entry("2-0")])
    assert rig.sessions.routed == [] and rig.acks.acked == []
    assert rig.owned.delivered == (0, 0)          # handed to nobody: read again after resume


async def test_a_session_behind_its_producers_is_throttled_until_it_catches_up() -> None:
    rig = Rig(max_in_flight=4)
    rig.table.refresh()
    rig.dispatcher.dispatch(rig.owned, [entry(f"{i}-0") for i in range(1, 6)])
    assert rig.owned.throttled and rig.table.dirty
    rig.table.refresh()
    assert rig.table.read_keys == [] and rig.table.live_keys == [KEY]
    assert rig.lines("session_throttled")[0]["data"]["in_flight"] == 5
    await rig.apply_all()
    assert not rig.owned.throttled and KEY in rig.table.moved
    rig.table.refresh()
    assert rig.table.read_keys == [KEY]


@pytest.mark.parametrize("given, stamped", [(None, "turn-4"), ("mine", "mine")])
async def test_correlation_ids_are_stamped_as_a_local_host_does(given: str | None,
                                                                stamped: str) -> None:
    rig = Rig()
    assert rig.sessions.session is not None
    rig.sessions.session.turn = 3
    extra = {"correlation_id": given} if given else {}
    rig.dispatcher.dispatch(rig.owned, [entry("1-0", **extra)])
    [(event, _, _)] = rig.sessions.routed
    assert event.correlation_id == stamped

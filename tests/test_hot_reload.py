"""Hot reload of charts: an edit is validated first; a good one is what the next
call runs while calls in progress finish on their version; a bad one shows its
errors and changes nothing. Covers the file watcher, `POST /charts/{name}/reload`,
`/charts`, the session manager's versions, and real `turnchart serve` /
`turnchart worker` processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.testclient import TestClient
from websockets.sync.client import ClientConnection, connect

from adapters.config import ServerSettings, Settings
from adapters.hot_reload import ChartReloader, FileChanges
from adapters.redis import Keys, RedisEventBus
from adapters.server.app import create_app
from adapters.server.metrics import Metrics
from adapters.server.remote_voice import RemoteVoiceService
from engine.chart.catalog import ChartCatalog, Reload
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink
from engine.runtime.manager import SessionManager
from engine.runtime.snapshot import MemorySnapshotStore, Snapshot
from engine.tools.fakes import fake_ports
from tests.support.chart_edits import BROKEN, BROKEN_LINE, EDITED, SHIPPED
from tests.support.redis_server import RedisServer, read_log, signal_child, wait_for_log
from tests.support.voice_fakes import (
    EnergyDetector,
    ScriptedTranscriber,
    ToneSpeech,
    fake_voice_factory,
)
from tests.support.waiting import wait_for, wait_until
from tests.support.webrtc_client import ServerProcess

TOKEN = "s3cret-admin-token-0123"
V1 = compile_text(SHIPPED).version_hash
V2 = compile_text(EDITED).version_hash
V1_TURN = ["IDLE → LISTENING (client_connected)", "LISTENING → THINKING (stt_final)",
           "THINKING → SPEAKING (response_ready)", "SPEAKING → LISTENING (playback_done)"]
V2_TURN = ["IDLE → LISTENING (client_connected)", "LISTENING → THINKING (stt_final)",
           "THINKING → SPEAKING (response_ready)", "SPEAKING → WRAP_UP (playback_done)",
           "WRAP_UP → LISTENING (ready_after_interrupt)"]


def save(path: Path, text: str) -> None:
    """Save like an editor that writes a temporary file and renames it over the chart."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def chart_copy(directory: Path) -> Path:
    path = directory / "voice_turn.yaml"
    path.write_text(SHIPPED, encoding="utf-8")
    return path


def moves(records: list[dict[str, Any]], session: str) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']} ({r['data']['event']})"
            for r in records if r["event_type"] == "state_transition"
            and r["session_id"] == session]


def started_on(records: list[dict[str, Any]], session: str) -> str:
    [record] = [r for r in records if r["event_type"] == "session_started"
                and r["session_id"] == session]
    return str(record["data"]["version_hash"])


# ------------------------------------------------------------- file changes
def test_every_file_counts_as_changed_when_watching_starts(tmp_path: Path) -> None:
    path = chart_copy(tmp_path)
    changes = FileChanges([str(path)], settle_s=0.3)
    assert changes.poll(100.0) == [str(path)]      # compared with what was loaded: no-op
    assert changes.poll(100.5) == []


def test_a_burst_of_writes_is_reported_once_after_it_settles(tmp_path: Path) -> None:
    path = chart_copy(tmp_path)
    changes = FileChanges([str(path)], settle_s=0.3)
    changes.poll(0.0)
    path.write_text(EDITED[:200], encoding="utf-8")     # an editor part-way through a save
    assert changes.poll(1.0) == []
    path.write_text(EDITED, encoding="utf-8")
    assert changes.poll(1.2) == []                       # still changing: wait
    assert changes.poll(1.4) == []
    assert changes.poll(1.6) == [str(path)]              # quiet for settle_s: read it once
    assert changes.poll(3.0) == []


def test_a_temp_file_renamed_over_the_chart_is_seen(tmp_path: Path) -> None:
    path = chart_copy(tmp_path)
    changes = FileChanges([str(path)], settle_s=0.3)
    changes.poll(0.0)
    save(path, SHIPPED)                                  # same bytes, new file
    assert changes.poll(1.0) == []
    assert changes.poll(1.4) == [str(path)]


def test_a_file_deleted_and_written_again_is_reported_once(tmp_path: Path) -> None:
    path = chart_copy(tmp_path)
    changes = FileChanges([str(path)], settle_s=0.3)
    changes.poll(0.0)
    path.unlink()
    assert changes.poll(1.0) == []
    path.write_text(EDITED, encoding="utf-8")
    assert changes.poll(1.1) == []
    assert changes.poll(1.5) == [str(path)]


# ----------------------------------------------------------------- reloader
async def test_the_reloader_logs_and_follows_only_good_new_versions(tmp_path: Path) -> None:
    path = chart_copy(tmp_path)
    catalog = ChartCatalog(default_registry())
    catalog.load(path)
    sink = ListSink()
    followed: list[Reload] = []
    reloader = ChartReloader(catalog, EventLog(sink, RealClock()), followed.append)

    path.write_text(BROKEN, encoding="utf-8")
    result = await reloader.reload(str(path), trigger="file")
    assert not result.ok and followed == []
    [failed] = sink.of_type("chart_reload_failed")
    assert failed["level"] == "ERROR" and failed["session_id"] == "-"
    assert failed["data"]["errors"] == [
        f"{path}:{BROKEN_LINE}:26: E130 unknown target state 'LISTENNING' "
        "(did you mean 'LISTENING'?)"]
    assert failed["data"]["version_hash"] == V1 and failed["data"]["trigger"] == "file"

    path.write_text(EDITED, encoding="utf-8")
    result = await reloader.reload(str(path), trigger="file")
    assert result.changed and [r.current for r in followed] == [result.current]
    [reloaded] = sink.of_type("chart_reloaded")
    assert reloaded["session_id"] == "-"
    assert (reloaded["data"]["old_version_hash"], reloaded["data"]["version_hash"]) == (V1, V2)

    await reloader.reload(str(path), trigger="file")       # nothing changed: nothing logged
    assert len(sink.of_type("chart_reloaded")) == 1 and len(followed) == 1


# ------------------------------------------------------ session manager versions
def connected(session_id: str) -> VoiceEvent:
    return VoiceEvent(event_type="client_connected", session_id=session_id, source="test",
                      timestamp=time.time(), correlation_id=None, payload={}, metadata={})


async def test_sessions_keep_their_version_and_resume_on_it() -> None:
    registry = default_registry()
    v1, v2 = compile_text(SHIPPED, registry=registry), compile_text(EDITED, registry=registry)
    clock, sink, store = RealClock(), ListSink(), MemorySnapshotStore()
    async with SessionManager(v1, registry, fake_ports(clock), clock, EventLog(sink, clock),
                              store) as manager:
        old = await manager.open("old")
        manager.route(connected("old"))
        assert await wait_until(lambda: old.state == "LISTENING", 5, 0.01)
        manager.use_chart(v2)
        new = await manager.open("new")
        assert (old.chart, new.chart) == (v1, v2)
        # The old session stops here (a crash, a hand-off) and is resumed from its
        # snapshot: it runs the version the snapshot names, still in memory.
        old.close()
        await old.finished.wait()
        assert store.snapshots["old"].version_hash == v1.version_hash
        resumed = await manager.open("old", resume=True)
        assert resumed is not old and resumed.chart is v1 and resumed.state == "LISTENING"
    [line] = sink.of_type("session_resumed", "old")
    assert line["data"]["version_hash"] == v1.version_hash
    assert sink.of_type("chart_version_missing") == []


async def test_a_snapshot_of_a_version_not_in_memory_resumes_on_the_current_one() -> None:
    registry = default_registry()
    v1, v2 = compile_text(SHIPPED, registry=registry), compile_text(EDITED, registry=registry)
    clock, sink, store = RealClock(), ListSink(), MemorySnapshotStore()
    await store.save(Snapshot("voice_turn", v1.version_hash, "fits",
                              ("CONNECTED", "LISTENING"), epoch=2, turn=1))
    await store.save(Snapshot("voice_turn", v2.version_hash, "lost",
                              ("CONNECTED", "WRAP_UP"), epoch=2, turn=1))
    async with SessionManager(v2, registry, fake_ports(clock), clock, EventLog(sink, clock),
                              store) as manager:
        session = await manager.open("fits", resume=True)
        assert session.chart is v2 and session.state == "LISTENING"
        [missing] = sink.of_type("chart_version_missing", "fits")
        assert missing["level"] == "WARNING"
        assert missing["data"] == {"chart": "voice_turn", "version_hash": v1.version_hash,
                                   "resumed_on": v2.version_hash}
    async with SessionManager(v1, registry, fake_ports(clock), clock, EventLog(sink, clock),
                              store) as manager:
        with pytest.raises(ValueError, match="does not fit chart"):
            await manager.open("lost", resume=True)       # WRAP_UP is not in v1
        assert manager.get("lost") is None


# ----------------------------------------------- the server, in process (fake speech)
@pytest.fixture
def sink() -> ListSink:
    return ListSink()


def voice_client(sink: ListSink, chart: Path, **server: Any) -> TestClient:
    settings = Settings(charts=[str(chart)], server=ServerSettings(**server))
    return TestClient(create_app(settings, voice_factory=fake_voice_factory(["hello"],
                                                                           ms_per_word=20),
                                 log_sink=sink))


def call_turn(ws: Any, session: str, sink: ListSink, last: str) -> None:
    ws.send_json({"event": "transcript", "text": "hello", "final": True})
    assert wait_for(lambda: last in moves(sink.records, session), 15), moves(sink.records,
                                                                              session)


def test_a_call_keeps_its_flow_while_the_next_call_follows_the_edit(tmp_path: Path,
                                                                    sink: ListSink) -> None:
    chart = chart_copy(tmp_path)
    with voice_client(sink, chart) as client, \
            client.websocket_connect("/websocket/offer") as first:
        assert wait_for(lambda: sink.of_type("chart_watch_started"), 10)
        first.send_json({"event": "start", "websocket_id": "first"})
        assert wait_for(lambda: moves(sink.records, "first"), 10)
        save(chart, EDITED)
        assert wait_for(lambda: sink.of_type("chart_reloaded"), 10)
        with client.websocket_connect("/websocket/offer") as second:
            second.send_json({"event": "start", "websocket_id": "second"})
            assert wait_for(lambda: moves(sink.records, "second"), 10)
            [listed] = client.get("/charts").json()["charts"]
            assert listed["version_hash"] == V2
            assert listed["live_versions"] == [
                {"version": 1, "version_hash": V2, "sessions": 1, "current": True},
                {"version": 1, "version_hash": V1, "sessions": 1, "current": False}]
            page = client.get("/charts/voice_turn").text
            assert "Live versions" in page and V1 in page and "WRAP_UP" in page
            call_turn(first, "first", sink, V1_TURN[-1])
            call_turn(second, "second", sink, V2_TURN[-1])
            second.send_json({"event": "stop"})
        first.send_json({"event": "stop"})
    records = sink.records
    assert moves(records, "first")[:4] == V1_TURN
    assert moves(records, "second")[:5] == V2_TURN
    assert (started_on(records, "first"), started_on(records, "second")) == (V1, V2)
    [reloaded] = sink.of_type("chart_reloaded")
    assert reloaded["data"]["old_version_hash"] == V1 and reloaded["data"]["trigger"] == "file"
    assert [r for r in records if r["level"] == "ERROR"] == []


def test_a_broken_edit_shows_its_errors_and_changes_nothing(tmp_path: Path,
                                                            sink: ListSink) -> None:
    chart = chart_copy(tmp_path)
    expected = f"{chart}:{BROKEN_LINE}:26: E130 unknown target state 'LISTENNING'"
    with voice_client(sink, chart) as client:
        assert wait_for(lambda: sink.of_type("chart_watch_started"), 10)
        save(chart, BROKEN)
        assert wait_for(lambda: sink.of_type("chart_reload_failed"), 10)
        [failed] = sink.of_type("chart_reload_failed")
        assert failed["data"]["errors"][0].startswith(expected)
        [listed] = client.get("/charts").json()["charts"]
        assert listed["version_hash"] == V1 and listed["errors"][0].startswith(expected)
        page = client.get("/charts/voice_turn").text
        assert "The last edit of this chart was rejected" in page
        assert expected.replace("'", "&#x27;") in page
        assert "<svg" in page and "SPEAKING" in page and "WRAP_UP" not in page
        health = client.get("/health")             # the last good version still serves
        assert health.status_code == 200
        assert health.json()["charts"] == {"voice_turn": "ok, last edit rejected"}
        with client.websocket_connect("/websocket/offer") as ws:
            ws.send_json({"event": "start", "websocket_id": "after-bad-edit"})
            assert wait_for(lambda: moves(sink.records, "after-bad-edit"), 10)
            call_turn(ws, "after-bad-edit", sink, V1_TURN[-1])
            ws.send_json({"event": "stop"})
        save(chart, SHIPPED)                       # fixed: the errors go away
        assert wait_for(lambda: sink.of_type("chart_reloaded"), 10)
        assert "rejected" not in client.get("/charts/voice_turn").text
        assert client.get("/charts").json()["charts"][0]["errors"] == []
    assert moves(sink.records, "after-bad-edit")[:4] == V1_TURN
    assert started_on(sink.records, "after-bad-edit") == V1


# -------------------------------------------------------------- reload endpoint
@pytest.fixture
def admin(tmp_path: Path, sink: ListSink) -> Iterator[tuple[TestClient, Path]]:
    chart = chart_copy(tmp_path)
    settings = Settings(charts=[str(chart)],
                        server=ServerSettings(admin_token=TOKEN, watch_charts=False))
    with TestClient(create_app(settings, log_sink=sink)) as client:
        yield client, chart


def test_the_reload_endpoint_does_not_exist_without_a_token(tmp_path: Path) -> None:
    chart = chart_copy(tmp_path)
    client = TestClient(create_app(Settings(charts=[str(chart)])))
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        response = client.post("/charts/voice_turn/reload", headers=headers)
        assert response.status_code == 404
        assert response.json()["error"] == "not found"


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer wrong-token-0123456789",
                                           f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_the_reload_endpoint_needs_the_token(admin: tuple[TestClient, Path],
                                             authorization: str | None) -> None:
    client, chart = admin
    save(chart, EDITED)
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/charts/voice_turn/reload", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in response.json()["error"]
    assert client.get("/charts").json()["charts"][0]["version_hash"] == V1   # nothing reloaded


def test_the_reload_endpoint_swaps_a_good_version_and_refuses_a_bad_one(
        admin: tuple[TestClient, Path], sink: ListSink) -> None:
    client, chart = admin
    auth = {"Authorization": f"Bearer {TOKEN}"}
    unchanged = client.post("/charts/voice_turn/reload", headers=auth)
    assert unchanged.status_code == 200
    assert unchanged.json()["changed"] is False and unchanged.json()["version_hash"] == V1

    save(chart, EDITED)
    response = client.post("/charts/voice_turn/reload", headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert (body["changed"], body["version_hash"], body["previous_version_hash"]) == \
        (True, V2, V1)
    assert body["live_versions"] == [{"version": 1, "version_hash": V2, "sessions": 0,
                                      "current": True}]
    [reloaded] = sink.of_type("chart_reloaded")
    assert reloaded["data"]["trigger"] == "http"

    save(chart, BROKEN)
    refused = client.post("/charts/voice_turn/reload", headers=auth)
    assert refused.status_code == 409
    assert refused.json()["version_hash"] == V2 and "keeps running" in refused.json()["error"]
    assert refused.json()["errors"][0].startswith(f"{chart}:{BROKEN_LINE}:26: E130")
    assert client.get("/charts").json()["charts"][0]["version_hash"] == V2

    missing = client.post("/charts/nope/reload", headers=auth)
    assert missing.status_code == 404 and missing.json()["charts"] == "voice_turn"


def test_an_index_page_lists_live_versions(admin: tuple[TestClient, Path]) -> None:
    client, _chart = admin
    page = client.get("/charts", headers={"accept": "text/html"}).text
    assert "live versions" in page and f"<code>{V1}</code> (current): 0 sessions" in page


# ------------------------------------------------------ `turnchart serve`, for real
class Caller:
    """A WebSocket caller that speaks in transcripts and drains the answer audio."""

    def __init__(self, base_url: str, session: str) -> None:
        self.ws: ClientConnection = connect(base_url.replace("http", "ws") + "/websocket/offer")
        self.ws.send(json.dumps({"event": "start", "websocket_id": session}))
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        try:
            while True:
                self.ws.recv()
        except Exception:
            return

    def say(self, text: str) -> None:
        self.ws.send(json.dumps({"event": "transcript", "text": text, "final": True}))

    def hang_up(self) -> None:
        self.ws.send(json.dumps({"event": "stop"}))
        self.ws.close()
        self._reader.join(5)


def test_editing_the_chart_of_a_running_server(tmp_path: Path) -> None:
    chart = chart_copy(tmp_path)
    server = ServerProcess(tmp_path, chart=chart)
    try:
        server.wait_ready()
        first = Caller(server.base_url, "first")
        assert wait_for(lambda: server.transitions("first"), 20)
        save(chart, EDITED)
        assert wait_for(lambda: any(r["event_type"] == "chart_reloaded"
                                    for r in server.records()), 20)
        first.say("hello")                        # a call in progress keeps its flow
        assert wait_for(lambda: "SPEAKING→LISTENING (playback_done)"
                        in server.transitions("first"), 30), server.transitions("first")
        second = Caller(server.base_url, "second")
        assert wait_for(lambda: server.transitions("second"), 20)
        second.say("hello")                       # the next call follows the edit
        assert wait_for(lambda: "WRAP_UP→LISTENING (ready_after_interrupt)"
                        in server.transitions("second"), 30), server.transitions("second")

        save(chart, BROKEN)
        assert wait_for(lambda: any(r["event_type"] == "chart_reload_failed"
                                    for r in server.records()), 20)
        page = httpx.get(f"{server.base_url}/charts/voice_turn", timeout=10).text
        assert "The last edit of this chart was rejected" in page
        assert f"{chart}:{BROKEN_LINE}:26: E130" in page
        [listed] = httpx.get(f"{server.base_url}/charts", timeout=10).json()["charts"]
        assert listed["version_hash"] == V2 and listed["errors"]
        third = Caller(server.base_url, "third")
        assert wait_for(lambda: server.transitions("third"), 20)
        third.say("hello")                        # still the last good version
        assert wait_for(lambda: "WRAP_UP→LISTENING (ready_after_interrupt)"
                        in server.transitions("third"), 30), server.transitions("third")
        for caller in (first, second, third):
            caller.hang_up()
    finally:
        server.stop()
    records = server.records()
    assert "SPEAKING→WRAP_UP (playback_done)" not in server.transitions("first")
    assert (started_on(records, "first"), started_on(records, "second"),
            started_on(records, "third")) == (V1, V2, V2)


# --------------------------------------------------------- Redis workers
def start_worker(url: str, chart: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`turnchart worker --headless`, watching its chart file (the default)."""
    exe = Path(sys.executable).with_name("turnchart")
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed here after fork
    try:
        return subprocess.Popen([str(exe), "worker", "--headless", "--redis", url,
                                 "--chart", str(chart), "--worker-id", "w1",
                                 "--lease-ms", "2000"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        out.close()


def event(session: str, event_type: str, **payload: Any) -> VoiceEvent:
    return VoiceEvent(event_type=event_type, session_id=session, source="test",
                      timestamp=time.time(), correlation_id=None, payload=payload, metadata={})


async def test_a_worker_watches_its_chart_and_reports_live_versions(
        tmp_path: Path, server: RedisServer, redis: Redis) -> None:
    chart = chart_copy(tmp_path)
    log_path = tmp_path / "worker.log"
    worker = start_worker(server.url, chart, log_path)
    log = EventLog(ListSink(), RealClock())
    front = RemoteVoiceService(compile_text(SHIPPED), default_registry(), log,
                               Metrics(lambda: 0), stt=ScriptedTranscriber(["hello"]),
                               detector_factory=EnergyDetector, speech=ToneSpeech(),
                               responder=fake_ports(RealClock()).responder,
                               redis_url=server.url)
    try:
        await asyncio.to_thread(wait_for_log, log_path, "chart_watch_started", 30, worker)
        async with RedisEventBus.from_url(server.url, log) as bus:
            await bus.publish(event("first", "client_connected"))
            assert await wait_until(lambda: moves(read_log(log_path), "first"), 20)
            save(chart, EDITED)
            await asyncio.to_thread(wait_for_log, log_path, "chart_reloaded", 20, worker)
            await bus.publish(event("second", "client_connected"))
            assert await wait_until(lambda: moves(read_log(log_path), "second"), 20)
            # The front-end's /charts counts come from the workers' stats.
            expected = {(V1, 1), (V2, 1)}
            counted: set[tuple[str, int]] = set()
            for _ in range(100):          # stats are published a few times a second
                counted = {(u.version_hash, u.sessions) for u in await front.version_uses()}
                if counted == expected:
                    break
                await asyncio.sleep(0.1)
            assert counted == expected
            stats = json.loads(await redis.hget(Keys().worker_stats, "w1") or "{}")
            assert {(v["version_hash"], v["sessions"]) for v in stats["versions"]} == expected
            for session in ("first", "second"):
                await bus.publish(event(session, "stt_final", text="hello", is_final=True))
            assert await wait_until(lambda: V1_TURN[-1] in moves(read_log(log_path), "first")
                                    and V2_TURN[-1] in moves(read_log(log_path), "second"), 20)
    finally:
        await front.stop()
        signal_child(worker, 15)
    records = read_log(log_path)
    assert moves(records, "first")[:4] == V1_TURN
    assert moves(records, "second")[:5] == V2_TURN
    [reloaded] = [r for r in records if r["event_type"] == "chart_reloaded"]
    assert (reloaded["data"]["old_version_hash"], reloaded["data"]["version_hash"]) == (V1, V2)

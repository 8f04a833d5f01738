"""Input limits (config `limits:`, adapters/server/limits.py): a body over
`max_body_bytes` gets 413 JSON, too many offers from one address get 429 with
Retry-After, a WebSocket message over `max_ws_message_bytes` gets an error and
a 1009 close while the call ends cleanly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from adapters.config import LimitsSettings, Settings, VoiceSettings, load_settings
from adapters.server.app import create_app
from adapters.server.limits import InputLimits, OfferRateLimit
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, ListSink
from tests.support.voice_fakes import fake_voice_factory
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
OFFER = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n", "webrtc_id": "lim"}


def transitions(sink: ListSink, session: str) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']} ({r['data']['event']})"
            for r in sink.of_type("state_transition", session)]


def no_voice_app(sink: ListSink, **limits: Any) -> Starlette:
    """The real app with live voice off: offers pass the limits, then get 503."""
    return create_app(Settings(voice=VoiceSettings(enabled=False),
                               limits=LimitsSettings(**limits)), log_sink=sink)


def refusals(sink: ListSink, reason: str) -> list[dict[str, Any]]:
    return [r for r in sink.of_type("request_refused") if r["data"]["reason"] == reason]


# ------------------------------------------------------------------- body size
def test_an_announced_body_over_the_limit_is_refused_with_413_json() -> None:
    sink = ListSink()
    with TestClient(no_voice_app(sink, max_body_bytes=2048)) as client:
        small = client.post("/webrtc/offer", json=OFFER)
        big = client.post("/webrtc/offer", content=b"x" * 4096,
                          headers={"content-type": "application/json"})
    assert small.status_code == 503          # under the limit: the route answered
    assert big.status_code == 413
    assert big.json()["limit_bytes"] == 2048
    assert "2048 bytes" in big.json()["error"]
    [line] = refusals(sink, "body_too_large")
    assert line["level"] == "WARNING" and line["session_id"] == "-"
    assert line["data"]["path"] == "/webrtc/offer"


def test_a_streamed_body_over_the_limit_is_refused_without_content_length() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * 1024

    sink = ListSink()
    with TestClient(no_voice_app(sink, max_body_bytes=4096)) as client:
        response = client.post("/webrtc/offer", content=chunks())
    assert response.request.headers.get("content-length") is None
    assert response.status_code == 413
    assert response.json()["limit_bytes"] == 4096


def _echo_app(limit: int) -> InputLimits:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"received": len(await request.body())})

    return InputLimits(Starlette(routes=[Route("/echo", echo, methods=["POST"])]),
                       max_body_bytes=limit, max_ws_message_bytes=1024, offer_paths=(),
                       offers=OfferRateLimit(10))


def test_any_route_reading_a_streamed_body_gets_413_instead_of_its_answer() -> None:
    def chunks(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield b"z" * 1000

    with TestClient(_echo_app(limit=2500)) as client:
        assert client.post("/echo", content=chunks(2)).json() == {"received": 2000}
        refused = client.post("/echo", content=chunks(3))
    assert refused.status_code == 413
    assert "received" not in refused.json()


# ------------------------------------------------------------------ offer rate
def test_offers_over_the_rate_get_429_with_retry_after() -> None:
    sink = ListSink()
    with TestClient(no_voice_app(sink, offers_per_minute=2)) as client:
        assert [client.post("/webrtc/offer", json=OFFER).status_code
                for _ in range(2)] == [503, 503]
        refused = client.post("/webrtc/offer", json=OFFER)
        # trickled ICE candidates of an offer already made are not offers
        candidate = client.post("/webrtc/offer", json={
            "type": "ice-candidate", "candidate": {"candidate": "c"}, "webrtc_id": "lim"})
        other = TestClient(client.app, client=("10.1.2.3", 40000))
        elsewhere = other.post("/webrtc/offer", json=OFFER)
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 30            # 2 per minute: one back within 30 s
    assert refused.json()["retry_after_s"] == retry_after
    assert "2 per minute" in refused.json()["error"]
    assert candidate.status_code == 503
    assert elsewhere.status_code == 503      # each address has its own allowance
    [line] = refusals(sink, "rate_limited")
    assert line["data"]["client"] == "testclient"


def test_websocket_openings_share_the_offer_allowance() -> None:
    sink = ListSink()
    with make_voice_client(sink, offers_per_minute=1) as client:
        with client.websocket_connect("/websocket/offer") as ws:
            ws.send_json({"event": "ping"})
            assert ws.receive_json() == {"event": "pong"}
            ws.send_json({"event": "stop"})
        with pytest.raises(WebSocketDenialResponse) as denied, \
                client.websocket_connect("/websocket/offer"):
            pass
        assert client.post("/webrtc/offer", json=OFFER).status_code == 429
    assert denied.value.status_code == 429
    assert int(denied.value.headers["retry-after"]) >= 1


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_bucket_refills_at_the_configured_rate() -> None:
    clock = Clock()
    bucket = OfferRateLimit(6, clock=clock)   # a burst of 6, then one per 10 s
    assert [bucket.take("a") for _ in range(6)] == [0.0] * 6
    assert bucket.take("a") == pytest.approx(10.0)
    clock.t += 4.0
    assert bucket.take("a") == pytest.approx(6.0)
    clock.t += 6.0
    assert bucket.take("a") == 0.0
    assert bucket.take("a") == pytest.approx(10.0)
    assert bucket.take("b") == 0.0


def test_the_bucket_table_stays_bounded_under_many_addresses() -> None:
    clock = Clock()
    bucket = OfferRateLimit(60, clock=clock, max_clients=100)
    for i in range(1000):
        bucket.take(f"10.0.{i // 256}.{i % 256}")
        clock.t += 0.001
    assert len(bucket._buckets) <= 100
    for _ in range(60):
        assert bucket.take("busy") == 0.0
    assert bucket.take("busy") > 0.0   # the newest stay tracked


# ------------------------------------------------------------- WebSocket size
def make_voice_client(sink: ListSink, **limits: Any) -> TestClient:
    settings = Settings(limits=LimitsSettings(**limits))
    return TestClient(create_app(settings, voice_factory=fake_voice_factory(["hello"]),
                                 log_sink=sink))


def test_a_websocket_message_over_the_limit_closes_with_1009_and_ends_the_call() -> None:
    sink = ListSink()
    with make_voice_client(sink, max_ws_message_bytes=1024) as client:
        with client.websocket_connect("/websocket/offer") as ws:
            ws.send_json({"event": "start", "websocket_id": "ws-big"})
            assert wait_for(lambda: transitions(sink, "ws-big"))
            ws.send_json({"event": "transcript", "text": "é" * 600})   # 1200+ bytes
            error = ws.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert wait_for(lambda: sink.of_type("session_closed", "ws-big"))
        with client.websocket_connect("/websocket/offer") as again:   # the server goes on
            again.send_json({"event": "ping"})
            assert again.receive_json() == {"event": "pong"}
            again.send_json({"event": "stop"})
    assert error["event"] == "error"
    assert "too large" in error["error"] and "1024" in error["error"]
    assert closed.value.code == 1009
    assert transitions(sink, "ws-big") == ["IDLE → LISTENING (client_connected)",
                                           "LISTENING → IDLE (client_disconnected)"]
    assert [r for r in sink.records if r["level"] == "ERROR"] == []
    [line] = refusals(sink, "ws_message_too_large")
    assert line["data"]["limit_bytes"] == 1024


def test_an_oversized_first_message_closes_a_connection_that_has_no_session_yet() -> None:
    sink = ListSink()
    with make_voice_client(sink, max_ws_message_bytes=1024) as client:
        with client.websocket_connect("/websocket/offer") as ws:
            ws.send_bytes(b"\0" * 5000)
            assert "too large" in ws.receive_json()["error"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert client.get("/sessions").json() == {"sessions": []}
    assert closed.value.code == 1009
    assert sink.of_type("session_started") == []


def test_messages_within_the_limit_pass() -> None:
    sink = ListSink()
    with make_voice_client(sink, max_ws_message_bytes=1024) as client, \
            client.websocket_connect("/websocket/offer") as ws:
        ws.send_json({"event": "start", "websocket_id": "ws-small"})
        assert wait_for(lambda: transitions(sink, "ws-small"))
        ws.send_json({"event": "transcript", "text": "what time is it " + "x" * 900})
        assert wait_for(lambda: "LISTENING → THINKING (stt_final)"
                        in transitions(sink, "ws-small"))
        ws.send_json({"event": "stop"})
    assert refusals(sink, "ws_message_too_large") == []


def test_limits_reach_the_log_of_a_plain_event_log() -> None:
    """The middleware logs through the app's EventLog: the same JSON lines as sessions."""
    sink = ListSink()
    app = InputLimits(Starlette(), max_body_bytes=1024, max_ws_message_bytes=1024,
                      offer_paths=(), offers=OfferRateLimit(1),
                      log=EventLog(sink, VirtualClock()))
    with TestClient(app) as client:
        assert client.post("/anything", content=b"q" * 2000).status_code == 413
    assert sink.records[0]["event_type"] == "request_refused"
    assert set(sink.records[0]) == {"ts", "t_ms", "level", "session_id", "event_type",
                                    "message", "data"}


def test_the_shipped_config_lists_the_limits_with_their_defaults() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    assert "limits:" in text
    assert load_settings(ROOT / "config.yaml").limits == LimitsSettings()

"""A web page on another site cannot take a call (adapters/server/origin.py): a
WebSocket opening or a POST with a foreign `Origin` gets 403 JSON and a
`request_refused` line; the server's own pages, `server.allowed_origins` and
clients that send no Origin pass; JSON routes refuse other content types (415)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from adapters.config import (
    ConfigError,
    ServerSettings,
    Settings,
    VoiceSettings,
    apply_env,
    load_settings,
)
from adapters.server.app import create_app
from adapters.server.origin import normalise_origin
from engine.runtime.logs import ListSink
from tests.support.live_clients import serve_app
from tests.support.voice_fakes import fake_voice_factory
from tests.support.waiting import wait_for

OFFER = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n", "webrtc_id": "o1"}
EVIL = "http://evil.example"


def voice_app(sink: ListSink, *, allowed: list[str] | None = None) -> Any:
    settings = Settings(server=ServerSettings(allowed_origins=allowed or []))
    return create_app(settings, voice_factory=fake_voice_factory(["hello"]), log_sink=sink)


def no_voice_app(sink: ListSink, *, allowed: list[str] | None = None) -> Any:
    settings = Settings(server=ServerSettings(allowed_origins=allowed or []),
                        voice=VoiceSettings(enabled=False))
    return create_app(settings, log_sink=sink)


def refusals(sink: ListSink, reason: str) -> list[dict[str, Any]]:
    return [r for r in sink.of_type("request_refused") if r["data"]["reason"] == reason]


def transitions(sink: ListSink, session: str) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']}"
            for r in sink.of_type("state_transition", session)]


# ----------------------------------------------------------------- WebSocket
def test_a_websocket_opening_from_another_site_is_refused_with_403_json() -> None:
    sink = ListSink()
    with TestClient(voice_app(sink)) as client:
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect(
                "/websocket/offer", headers={"origin": EVIL}) as ws:
            ws.send_json({"event": "start", "websocket_id": "evil"})
        assert refused.value.status_code == 403
        assert "evil.example" in json.loads(refused.value.content)["error"]
    [line] = refusals(sink, "origin_refused")
    assert line["level"] == "WARNING" and line["session_id"] == "-"
    assert line["data"] == {"reason": "origin_refused", "status": 403, "path": "/websocket/offer",
                            "client": "testclient", "origin": EVIL}
    assert sink.of_type("state_transition") == []          # no session was ever made


def test_a_real_server_never_switches_protocols_for_a_foreign_origin() -> None:
    """Over a socket, as a browser would: the answer is 403, not 101."""
    sink = ListSink()
    with serve_app(voice_app(sink)) as served:
        url = served.base_url.replace("http://", "ws://") + "/websocket/offer"
        for origin in (EVIL, "null", f"http://127.0.0.1:{served.base_url.rsplit(':', 1)[1]}0"):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, origin=origin, open_timeout=10)
            assert refused.value.response.status_code == 403, origin
            assert json.loads(refused.value.response.body or b"{}")["error"]
        # The same server's own page (Origin = the Host it was sent to) takes a call.
        with connect(url, origin=served.base_url, open_timeout=10) as ws:
            ws.send(json.dumps({"event": "start", "websocket_id": "own"}))
            assert wait_for(lambda: transitions(sink, "own"), 10)
            ws.send(json.dumps({"event": "transcript", "text": "hello", "final": True}))
            assert wait_for(lambda: "THINKING → SPEAKING" in transitions(sink, "own"), 10)
            ws.send(json.dumps({"event": "stop"}))
    assert len(refusals(sink, "origin_refused")) == 3
    assert [r["session_id"] for r in sink.of_type("state_transition")] == \
        ["own"] * len(sink.of_type("state_transition"))


@pytest.mark.parametrize("origin", [None, "http://testserver", "HTTP://TestServer:80",
                                    "https://app.example.com"])
def test_own_listed_and_absent_origins_open_calls(origin: str | None) -> None:
    sink = ListSink()
    headers = {"origin": origin} if origin else {}
    with TestClient(voice_app(sink, allowed=["https://app.example.com"])) as client, \
            client.websocket_connect("/websocket/offer", headers=headers) as ws:
        ws.send_json({"event": "start", "websocket_id": "ok"})
        assert wait_for(lambda: transitions(sink, "ok"))
        ws.send_json({"event": "stop"})
    assert sink.of_type("request_refused") == []


# ----------------------------------------------------------------- HTTP
def test_a_post_from_another_site_is_refused_before_the_route() -> None:
    sink = ListSink()
    with TestClient(no_voice_app(sink)) as client:
        evil = client.post("/webrtc/offer", json=OFFER, headers={"origin": EVIL})
        reload = client.post("/charts/voice_turn/reload", headers={"origin": EVIL})
        own = client.post("/webrtc/offer", json=OFFER, headers={"origin": "http://testserver"})
        plain = client.post("/webrtc/offer", json=OFFER)
        read = client.get("/health", headers={"origin": EVIL})
    assert evil.status_code == 403 and "evil.example" in evil.json()["error"]
    assert reload.status_code == 403
    assert own.status_code == 503 and plain.status_code == 503   # reached the route (no voice)
    assert read.status_code == 200                                 # reading changes nothing
    assert [r["data"]["path"] for r in refusals(sink, "origin_refused")] == \
        ["/webrtc/offer", "/charts/voice_turn/reload"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_json_route_refuses_other_content_types_with_415(content_type: str | None) -> None:
    sink = ListSink()
    headers = {"content-type": content_type} if content_type else {}
    with TestClient(voice_app(sink)) as client:
        response = client.post("/webrtc/offer", content=json.dumps(OFFER), headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    [line] = refusals(sink, "unsupported_media_type")
    assert line["data"]["content_type"] == content_type and line["session_id"] == "-"


def test_json_with_a_charset_reaches_the_route() -> None:
    sink = ListSink()
    with TestClient(voice_app(sink)) as client:
        response = client.post("/webrtc/offer", content=b'{"type": "bogus"}',
                               headers={"content-type": "Application/JSON; charset=utf-8"})
    assert response.status_code == 400          # parsed and judged by the route itself
    assert sink.of_type("request_refused") == []


# ----------------------------------------------------------------- config
def test_allowed_origins_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server: {allowed_origins: ['https://app.example.com']}\n")
    assert load_settings(config).server.allowed_origins == ["https://app.example.com"]
    env = apply_env(Settings(), {"TURNCHART_ALLOWED_ORIGINS": "https://a.example, http://b:8080"})
    assert env.server.allowed_origins == ["https://a.example", "http://b:8080"]
    config.write_text("server: {allowed_origins: ['app.example.com/path']}\n")
    with pytest.raises(ConfigError, match=r"server\.allowed_origins.*not an origin"):
        load_settings(config)
    with pytest.raises(ConfigError, match="allowed_origins"):
        apply_env(Settings(), {"TURNCHART_ALLOWED_ORIGINS": "*"})


@pytest.mark.parametrize(("given", "normal"), [
    ("http://127.0.0.1:5204", "http://127.0.0.1:5204"), ("HTTPS://A.example:443", "https://a.example"),
    ("http://[::1]:5204", "http://[::1]:5204"), ("https://a.example/", "https://a.example"),
    ("null", None), ("file://", None), ("https://a.example/x", None), ("*", None),
    ("http://u:p@a.example", None), ("http://a.example:99999", None)])
def test_origins_are_compared_normalised(given: str, normal: str | None) -> None:
    assert normalise_origin(given) == normal

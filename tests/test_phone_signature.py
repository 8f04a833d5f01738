"""Who may use the phone routes: Twilio's request signature (X-Twilio-Signature) when an
auth token is configured, the offer rate limit when none is."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from adapters.config import LimitsSettings, Settings, TelephoneSettings
from adapters.server.app import create_app
from adapters.server.twilio_signature import is_valid, signature
from engine.runtime.logs import ListSink
from tests.support.voice_fakes import fake_voice_factory
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "12345"
# Twilio's documented example (twilio.com/docs/usage/security, and its SDKs' tests)
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
          "From": "+14158675309", "To": "+18005551212"}


def test_signatures_match_twilios_published_examples() -> None:
    assert signature(TOKEN, URL, PARAMS.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                ("Digits", "1234"), ("Digits", "1234")]
    assert signature(TOKEN, URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    good = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert is_valid(TOKEN, URL, PARAMS.items(), good)
    assert is_valid(TOKEN, URL.replace(".com/", ".com:443/"), PARAMS.items(), good)
    assert not is_valid(TOKEN, URL + "&x=1", PARAMS.items(), good)
    assert not is_valid(TOKEN, URL, {**PARAMS, "Digits": "9999"}.items(), good)
    assert not is_valid("other", URL, PARAMS.items(), good)
    assert not is_valid(TOKEN, URL, PARAMS.items(), None)
    assert not is_valid(TOKEN, URL, PARAMS.items(), "ünïcode")


@pytest.fixture
def signed_app(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, ListSink]:
    monkeypatch.setenv("TURNCHART_TEST_TWILIO_TOKEN", TOKEN)
    sink = ListSink()
    settings = Settings(telephone=TelephoneSettings(auth_token_env="TURNCHART_TEST_TWILIO_TOKEN"))
    app = create_app(settings, voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    return TestClient(app), sink


def test_the_webhook_needs_a_valid_signature(signed_app: tuple[TestClient, ListSink]) -> None:
    client, sink = signed_app
    form = {"CallSid": "CA1", "From": "+1555"}
    with client:
        unsigned = client.post("/telephone/incoming", data=form)
        forged = client.post("/telephone/incoming", data=form,
                             headers={"X-Twilio-Signature": signature("guess", "x", [])})
        good = signature(TOKEN, "http://testserver/telephone/incoming", form.items())
        signed = client.post("/telephone/incoming", data=form,
                             headers={"X-Twilio-Signature": good})
        tampered = client.post("/telephone/incoming", data={**form, "From": "+1666"},
                               headers={"X-Twilio-Signature": good})
    assert unsigned.status_code == forged.status_code == tampered.status_code == 403
    assert "X-Twilio-Signature" in unsigned.json()["error"]
    assert signed.status_code == 200 and "<Connect><Stream" in signed.text
    refused = [r for r in sink.records if r["event_type"] == "request_refused"]
    assert len(refused) == 3 and {r["data"]["reason"] for r in refused} == {"twilio_signature"}
    assert "missing" in refused[0]["message"] and "does not sign" in refused[1]["message"]


def test_the_media_stream_needs_a_valid_signature(
        signed_app: tuple[TestClient, ListSink]) -> None:
    client, sink = signed_app
    with client:
        with pytest.raises(WebSocketDisconnect) as refused, \
                client.websocket_connect("/telephone/handler") as ws:
            ws.send_json({"event": "start", "streamSid": "MZstranger"})
            ws.receive()
        assert refused.value.code == 1008
        good = signature(TOKEN, "ws://testserver/telephone/handler")
        with client.websocket_connect("/telephone/handler",
                                      headers={"X-Twilio-Signature": good}) as ws:
            ws.send_json({"event": "start", "streamSid": "MZtwilio"})
            assert wait_for(lambda: sink.of_type("state_transition", "MZtwilio"), 10)
            ws.send_json({"event": "stop", "streamSid": "MZtwilio"})
    assert sink.of_type("state_transition", "MZstranger") == []


def test_behind_a_proxy_the_public_url_is_signed_and_streamed_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNCHART_TEST_TWILIO_TOKEN", TOKEN)
    settings = Settings(telephone=TelephoneSettings(
        auth_token_env="TURNCHART_TEST_TWILIO_TOKEN", public_url="https://voice.example.com"))
    app = create_app(settings, voice_factory=fake_voice_factory(["hello"]), log_sink=ListSink())
    form = {"CallSid": "CA2"}
    public = signature(TOKEN, "https://voice.example.com/telephone/incoming", form.items())
    local = signature(TOKEN, "http://testserver/telephone/incoming", form.items())
    with TestClient(app) as client:
        answer = client.post("/telephone/incoming", data=form,
                             headers={"X-Twilio-Signature": public})
        wrong = client.post("/telephone/incoming", data=form,
                            headers={"X-Twilio-Signature": local})
    assert answer.status_code == 200
    assert 'url="wss://voice.example.com/telephone/handler"' in answer.text
    assert wrong.status_code == 403


def test_a_bad_public_url_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="public_url"):
        TelephoneSettings(public_url="voice.example.com/path")


def test_unsigned_phone_streams_count_against_the_offer_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    sink = ListSink()
    app = create_app(Settings(limits=LimitsSettings(offers_per_minute=1)),
                     voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with TestClient(app) as client:
        with client.websocket_connect("/telephone/handler") as first:
            first.send_json({"event": "start", "streamSid": "MZone"})
            assert wait_for(lambda: sink.of_type("state_transition", "MZone"), 10)
            first.send_json({"event": "stop", "streamSid": "MZone"})
        with pytest.raises(WebSocketDenialResponse) as second, \
                client.websocket_connect("/telephone/handler") as ws:
            ws.receive()
    assert second.value.status_code == 429   # the handshake is answered over HTTP
    limited = [r for r in sink.records if r["event_type"] == "request_refused"]
    assert limited and limited[0]["data"]["reason"] == "rate_limited"


def _chart_with_dtmf(tmp_path: Path) -> Path:
    """The shipped chart plus a `dtmf` event that LISTENING takes (a key menu)."""
    text = (ROOT / "charts" / "voice_turn.yaml").read_text()
    text = text.replace("  client_connected: {}\n",
                        "  client_connected: {}\n  dtmf: {payload: {digit: str}}\n", 1)
    text = text.replace("          stt_final: {target: THINKING, guard: has_final_text}\n",
                        "          stt_final: {target: THINKING, guard: has_final_text}\n"
                        "          dtmf: LISTENING\n", 1)
    path = tmp_path / "voice_turn.yaml"
    path.write_text(text)
    return path


def test_a_key_press_is_the_charts_dtmf_event_when_it_has_one(tmp_path: Path) -> None:
    sink = ListSink()
    settings = Settings(charts=[str(_chart_with_dtmf(tmp_path))])
    app = create_app(settings, voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with TestClient(app) as client, client.websocket_connect("/telephone/handler") as ws:
        ws.send_json({"event": "start", "streamSid": "MZkeys"})
        assert wait_for(lambda: sink.of_type("state_transition", "MZkeys"), 10)
        ws.send_json({"event": "dtmf", "streamSid": "MZkeys",
                      "dtmf": {"track": "inbound_track", "digit": "7"}})
        assert wait_for(lambda: [r for r in sink.of_type("state_transition", "MZkeys")
                                 if r["data"]["event"] == "dtmf"], 10)
        ws.send_json({"event": "stop", "streamSid": "MZkeys"})
    received = [r for r in sink.of_type("event_received", "MZkeys")
                if r["data"]["event"] == "dtmf"]
    assert received[0]["data"]["payload"] == {"digit": "7"}


def test_without_a_dtmf_event_a_key_press_is_only_logged() -> None:
    sink = ListSink()
    app = create_app(Settings(), voice_factory=fake_voice_factory(["hello"]), log_sink=sink)
    with TestClient(app) as client, client.websocket_connect("/telephone/handler") as ws:
        ws.send_json({"event": "start", "streamSid": "MZplain"})
        assert wait_for(lambda: sink.of_type("state_transition", "MZplain"), 10)
        ws.send_json({"event": "dtmf", "streamSid": "MZplain", "dtmf": {"digit": "1"}})
        assert wait_for(lambda: sink.of_type("phone_dtmf", "MZplain"), 10)
        ws.send_json({"event": "stop", "streamSid": "MZplain"})
    assert [r for r in sink.records if r["session_id"] == "MZplain"
            and r["event_type"] in ("event_received", "event_invalid", "transition_rejected")
            and r["data"].get("event", "dtmf") == "dtmf"] == []
    assert not [r for r in sink.records if r["level"] in ("ERROR", "WARNING")]

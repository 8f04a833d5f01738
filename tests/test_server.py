"""HTTP routes of the first server, through Starlette's TestClient."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from adapters.config import Settings
from adapters.server.app import create_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings()))


def test_health_reports_loaded_charts(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "charts": {"voice_turn": "ok"}, "bus": "memory",
                               "voice": "off", "sessions": 0}


def test_charts_lists_the_shipped_chart(client: TestClient) -> None:
    body = client.get("/charts").json()
    assert [c["name"] for c in body["charts"]] == ["voice_turn"]
    assert body["charts"][0]["errors"] == []
    assert len(body["charts"][0]["version_hash"]) == 16


def test_chart_page_shows_diagram_states_and_events(client: TestClient) -> None:
    response = client.get("/charts/voice_turn")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<svg" in page
    for name in ("IDLE", "LISTENING", "THINKING", "SPEAKING", "INTERRUPT", "stt_final",
                 "barge_in", "microphone: gated", "respond", "600ms → filler_due"):
        assert name in page, name


@pytest.mark.parametrize(("suffix", "media", "marker"), [
    ("svg", "image/svg+xml", "<svg"),
    ("mmd", "text/vnd.mermaid", "stateDiagram-v2"),
    ("json", "application/json", '"transitions"'),
])
def test_chart_downloads(client: TestClient, suffix: str, media: str, marker: str) -> None:
    response = client.get(f"/charts/voice_turn.{suffix}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert marker in response.text


def test_unknown_chart_is_a_404_that_lists_the_known_ones(client: TestClient) -> None:
    response = client.get("/charts/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "no chart named 'nope'", "charts": "voice_turn"}


def test_wrong_method_is_rejected(client: TestClient) -> None:
    assert client.post("/charts/voice_turn").status_code == 405


def test_a_broken_chart_shows_its_errors_and_health_degrades(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = (ROOT / "charts" / "voice_turn.yaml").read_text().replace(
        "playback_done: LISTENING", "playback_done: LISTENNING")
    broken.write_text(text.replace("chart: voice_turn", "chart: broken"))
    client = TestClient(create_app(Settings(charts=[str(broken)])))
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["charts"] == {"broken": "errors"}
    page = client.get("/charts/broken")
    assert page.status_code == 200
    assert "unknown target state &#x27;LISTENNING&#x27;" in page.text
    assert client.get("/charts/broken.svg").status_code == 409

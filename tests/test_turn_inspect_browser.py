"""/inspect shows each call's turn policy (the current state's, from the chart's JSON)
beside its contract: Debian's headless Chromium against a real `turnchart serve` running
tests/charts/turn_policy.yaml, one WebSocket caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adapters.speech.audio import wav_bytes
from tests.support.browser import chromium, console_lines, missing_tools
from tests.support.live_clients import WebSocketCaller
from tests.support.waiting import wait_for
from tests.support.webrtc_client import RATE, ServerProcess

CHART = Path(__file__).resolve().parent / "charts" / "turn_policy.yaml"
CALL = "turn-call"


def row(browser: Any) -> dict[str, str] | None:
    found = browser.execute_script("""
        const row = document.querySelector(`#sessions tr[data-session="${arguments[0]}"]`);
        return row ? {state: row.dataset.state,
                      turn: row.querySelector('.turn').textContent} : null;""",
                                   CALL)
    return dict(found) if found else None


def test_inspect_shows_the_current_states_turn_policy(tmp_path: Path) -> None:
    assert not missing_tools(), missing_tools()
    quiet = tmp_path / "quiet.wav"
    quiet.write_bytes(wav_bytes(np.zeros(RATE, dtype=np.int16), RATE))
    server = ServerProcess(tmp_path, "voice: {chart: turn_policy}\n", chart=CHART)
    try:
        server.wait_ready()
        with chromium(quiet, tmp_path) as browser:
            browser.get(f"{server.base_url}/inspect")
            caller = WebSocketCaller(server.base_url, CALL)
            try:
                want = {"state": "CHAT",
                        "turn": "end silence · patience 300 ms · barge-in 200 ms speaking, "
                                "800 ms thinking"}
                assert wait_for(lambda: row(browser) == want, 20), (
                    f"{row(browser)}\n" + "\n".join(console_lines(browser)[-20:]))
                header = browser.execute_script(
                    "return [...document.querySelectorAll('#sessions th')].map(t => t.textContent)")
                assert header[-1] == "turn"
            finally:
                caller.close()
    finally:
        server.stop()

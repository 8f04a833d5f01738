"""The /inspect page in a real browser (Debian's headless Chromium) against a real
`turnchart serve`: while a WebSocket caller asks for a story and talks over the
answer, the page moves the session through the chart, and clicking the session
shows its timeline with the barge-in. Reads DOM attributes, not pixels; saves
a screenshot under the test's temp dir (and $TURNCHART_ARTIFACTS): `scripts/screenshots`
copies it to docs/img/inspect.png, the one the README shows. Tests never write the tree."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.speech.audio import resample, wav_bytes
from tests.support.browser import (
    browser_test_server,
    chromium,
    console_lines,
    save_screenshot,
    text_of,
)
from tests.support.live_clients import WebSocketCaller
from tests.support.waiting import wait_for
from tests.support.webrtc_client import RATE, ServerProcess, speech48k

CALL = "inspect-call"




@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with browser_test_server(tmp_path) as process:
        yield process


def page_state(browser: Any) -> dict[str, Any]:
    """What the page shows about the call: its row, and the diagram's highlighted states."""
    return dict(browser.execute_script("""
        const row = document.querySelector(`#sessions tr[data-session="${arguments[0]}"]`);
        const live = [...document.querySelectorAll('#diagram g.state.live')].map(g => ({
            state: g.id.replace(/^state-/, ''), sessions: g.getAttribute('data-sessions')}));
        return {row: row ? {state: row.dataset.state, live: row.dataset.live} : null, live,
                conn: document.getElementById('conn').dataset.status};""", CALL))


def highlighted(browser: Any, state: str) -> bool:
    """The diagram puts the call on `state`, and only there."""
    shown = page_state(browser)
    return (shown["row"] is not None and shown["row"]["state"] == state
            and shown["live"] == [{"state": state, "sessions": CALL}])


def timeline_rows(browser: Any) -> list[str]:
    return list(browser.execute_script("""
        return [...document.querySelectorAll('#timeline-rows tbody tr')].map(
            r => `${r.dataset.from}→${r.dataset.to} (${r.dataset.event})`);"""))


def test_inspect_page_follows_a_call_in_chromium(server: ServerProcess, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.wav"  # the page never opens the microphone
    quiet.write_bytes(wav_bytes(np.zeros(RATE, dtype=np.int16), RATE))
    stop = resample(speech48k("stop"), RATE, 16_000)
    with chromium(quiet, tmp_path) as browser:
        browser.set_window_size(1400, 1480)
        caller: WebSocketCaller | None = None

        def explain() -> str:  # what to look at when an assertion fails
            save_screenshot(browser, tmp_path / "inspect_failed.png")
            return (f"\npage: {page_state(browser)}\ntimeline: {timeline_rows(browser)}"
                    f"\nmeta: {text_of(browser, 'tl-meta')!r}"
                    f"\nserver: {server.transitions(CALL)}"
                    "\nconsole:\n" + "\n".join(console_lines(browser)[-20:]) +
                    "\nserver log tail:\n" + server.log_path.read_text()[-3000:])

        browser.get(f"{server.base_url}/inspect")
        assert wait_for(lambda: page_state(browser)["conn"] == "live", 10), explain()
        assert wait_for(lambda: browser.execute_script(
            "return document.querySelectorAll('#diagram g.state').length") >= 5, 10), explain()
        try:
            caller = WebSocketCaller(server.base_url, CALL)
            assert wait_for(lambda: highlighted(browser, "LISTENING"), 15), explain()

            browser.find_element("css selector", f'#sessions tr[data-session="{CALL}"]').click()
            assert wait_for(lambda: timeline_rows(browser)[:1]
                            == ["IDLE→LISTENING (client_connected)"], 10), explain()
            assert text_of(browser, "tl-session") == CALL

            caller.say_text("tell me a story")
            assert wait_for(lambda: highlighted(browser, "SPEAKING"), 20), explain()
            classes = browser.find_element("id", "state-SPEAKING").get_attribute("class")
            assert {"live", "selected"} <= set(classes.split()), classes  # the call clicked

            caller.say_audio(stop)  # talk over the answer
            assert wait_for(lambda: "SPEAKING→INTERRUPT (barge_in)" in timeline_rows(browser),
                            20), explain()
            assert wait_for(lambda: highlighted(browser, "LISTENING"), 10), explain()
            assert timeline_rows(browser)[:5] == [
                "IDLE→LISTENING (client_connected)", "LISTENING→THINKING (stt_final)",
                "THINKING→SPEAKING (response_ready)", "SPEAKING→INTERRUPT (barge_in)",
                "INTERRUPT→LISTENING (ready_after_interrupt)"], explain()
            assert wait_for(lambda: browser.execute_script(
                "return document.querySelectorAll('#barge-ins tr[data-outcome=\"applied\"]')"
                ".length") == 1, 10), explain()
            bars = browser.execute_script(
                "return [...document.querySelectorAll('#tl-chart rect.bar')].map(r => "
                "r.getAttribute('class'));")
            assert "bar activity done" in bars and "bar activity cancelled" in bars, bars
            assert any(b.startswith("bar effect") for b in bars), bars
            time.sleep(0.5)  # let the "for" column and the timeline's clock tick once
            saved = save_screenshot(browser, tmp_path / "inspect.png")
            # /favicon.ico was a 404, a console error on every page load (issue 13 §3.10)
            not_found = [line for line in console_lines(browser) if "404" in line]
            assert not_found == [], not_found
        finally:
            if caller is not None:
                caller.close()
        assert wait_for(lambda: (page_state(browser)["row"] or {}).get("live") == "false"
                        and page_state(browser)["live"] == [], 15), explain()
        # Stopping the server while the page is open: its stream ends, nothing is cut off.
        server.stop()
    assert "timeout graceful shutdown exceeded" not in server.log_path.read_text()
    assert saved[0] == tmp_path / "inspect.png"
    assert saved[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved[0].stat().st_size > 20_000
    assert [r for r in server.records() if r["level"] == "ERROR"] == []

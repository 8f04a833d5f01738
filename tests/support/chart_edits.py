"""The shipped chart and two edits of it, for the hot-reload tests: one that
changes the flow (after an answer, a WRAP_UP state hands the floor back) and
one with a mistake the validator rejects."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "charts" / "voice_turn.yaml").read_text(encoding="utf-8")
EDITED = SHIPPED.replace("          playback_done: LISTENING\n",
                         "          playback_done: WRAP_UP\n") + (
    "\n      WRAP_UP:\n"
    "        after: {0ms: ready_after_interrupt}\n"
    "        on:\n"
    "          ready_after_interrupt: LISTENING\n")
BROKEN = SHIPPED.replace("playback_done: LISTENING", "playback_done: LISTENNING")
BROKEN_LINE = BROKEN.splitlines().index("          playback_done: LISTENNING") + 1

"""The speech that makes a barge-in while answer audio streams has its own server default
(`speech.barge_in_speaking_ms`, 120 ms) for states whose turn policy leaves
`barge_in.speaking_ms` unset; while the answer is prepared, and with the microphone
open, the detector keeps `speech.vad_min_speech_ms` (200 ms)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from adapters.speech.models import SpeechModels, SpeechSettings
from adapters.speech.silero import SileroVadFactory
from adapters.speech.vad import SpeechDetector
from adapters.turn.gate import TurnGate
from engine.chart.turn import NO_POLICY, TurnPolicy

STREAMING = {"microphone": "gated", "playback": "streaming"}
PREPARING = {"microphone": "gated", "playback": "stopped"}
LISTENING = {"microphone": "open", "playback": "stopped"}


def shipped_detector(**settings: Any) -> SpeechDetector:
    models = SpeechModels(SpeechSettings(**settings), SileroVadFactory.shared(),
                          stt=cast(Any, None), tts=cast(Any, None))
    return models.detector()


def needed(gate: TurnGate, policy: TurnPolicy, contract: dict[str, str]) -> float:
    """The speech the connection's detector needs for this frame (one gate per call)."""
    gate.configure(policy, contract)
    return float(gate.detector.min_speech_ms)


def test_the_shipped_default_applies_only_over_streaming_answer_audio() -> None:
    detector = shipped_detector()
    gate = TurnGate(detector)
    assert needed(gate, NO_POLICY, STREAMING) == 120
    assert needed(gate, NO_POLICY, PREPARING) == 200
    assert needed(gate, NO_POLICY, LISTENING) == 200
    assert needed(gate, NO_POLICY, STREAMING) == 120
    detector.close()


def test_the_chart_and_the_config_override_it() -> None:
    detector = shipped_detector(barge_in_speaking_ms=250)
    gate = TurnGate(detector)
    assert needed(gate, NO_POLICY, STREAMING) == 250
    assert needed(gate, TurnPolicy(barge_in_speaking_ms=300), STREAMING) == 300
    assert needed(gate, TurnPolicy(barge_in_thinking_ms=80), PREPARING) == 80
    assert needed(gate, NO_POLICY, LISTENING) == 200
    detector.close()


def test_a_detector_without_it_needs_min_speech_ms_everywhere() -> None:
    detector = SpeechDetector(SileroVadFactory.shared(), min_speech_ms=180)
    assert detector.barge_in_speaking_ms == 180
    assert needed(TurnGate(detector), NO_POLICY, STREAMING) == 180
    detector.close()


def test_a_negative_value_is_refused() -> None:
    with pytest.raises(ValueError, match="barge_in_speaking_ms"):
        SpeechDetector(SileroVadFactory.shared(), barge_in_speaking_ms=-1)

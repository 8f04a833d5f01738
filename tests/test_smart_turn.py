"""Smart Turn v3.2 (adapters/turn/smart.py): the numpy Whisper features, the model as
scripts/_setup.sh installs it, and the fall-back when it is not there."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.speech.samples import padded_speech, tone
from adapters.turn import smart
from adapters.turn.gate import TurnGate
from engine.chart.turn import TurnPolicy
from tests.support.voice_fakes import EnergyDetector

SETUP_HINT = "scripts/_setup.sh installs it (scripts/_smart_turn.py)"


def test_features_are_whisper_shaped_deterministic_and_bounded() -> None:
    rng = np.random.default_rng(7)
    pcm = np.clip(rng.normal(0, 3000, 3 * smart.SAMPLE_RATE), -32768, 32767).astype(np.int16)
    first, again = smart.features(pcm), smart.features(pcm.copy())
    assert first.shape == (80, 800) and first.dtype == np.float32
    assert np.array_equal(first, again)
    assert np.isfinite(first).all()
    assert float(first.max() - first.min()) <= 2.0 + 1e-6   # clamped to 8 dB below the max / 4


def test_short_audio_is_left_padded_and_long_audio_keeps_its_last_8_s() -> None:
    rng = np.random.default_rng(8)
    long = np.clip(rng.normal(0, 3000, 11 * smart.SAMPLE_RATE), -32768, 32767).astype(np.int16)
    assert np.array_equal(smart.features(long), smart.features(long[-smart.MAX_SAMPLES:]))
    short = long[:smart.SAMPLE_RATE]
    padded = np.concatenate([np.zeros(smart.MAX_SAMPLES - len(short), np.int16), short])
    assert np.array_equal(smart.features(short), smart.features(padded))
    assert np.array_equal(smart.fit_to_window(short)[-len(short):], short / 32768.0)


def test_a_tone_lands_in_its_mel_band() -> None:
    """1 kHz is mel 15 on Slaney's scale; with 80 bands over 0-8 kHz (45.2 mel) band k is
    centred on (k + 1) · 45.2 / 81, so 1 kHz is band 26."""
    feats = smart.features(tone(1000, 8000, amplitude=8000))
    assert int(np.argmax(feats.mean(axis=1))) == 26


@pytest.fixture(scope="module")
def model() -> smart.SmartTurn:
    path = smart.default_model_path()
    assert path.is_file(), f"no Smart Turn model at {path}: {SETUP_HINT}"
    loaded = smart.load(path)
    assert loaded is not None, smart.unavailable_reason(path)
    return loaded


def probabilities(model: smart.SmartTurn, text: str) -> list[float]:
    """Four takes (noise seed, trailing silence around the detector's 200 ms). Each take
    is synthesised afresh, and espeak-ng does not say the same text the same way twice
    (four calls in one process: 25000, 24758, 24756, 24767 samples at 22.05 kHz, all
    different bytes; the model itself is deterministic on the same audio), so the takes
    differ by a few ms of timing and the model hears that."""
    return [model.decide(padded_speech(text, lead_ms=500, tail_ms=tail, seed=seed)).probability
            for tail in (100, 200) for seed in (0, 3)]


def test_finished_sentences_are_complete_and_cut_off_ones_are_not(model: smart.SmartTurn
                                                                  ) -> None:
    """What must hold for a working model, with room for espeak's take-to-take variance.
    Measured (24-48 takes each): finished 0.56-0.99 (the table sentence is the spread one:
    min 0.56 over 24 takes, 0.63 over 48, median 0.91), cut off 0.01-0.06. An absolute
    bound on every take (it was > 0.7) failed once on a 0.66 take; so: each finished
    sentence is called finished by most of its takes (median above the model's own 0.5),
    every cut-off take stays well below it, and every finished take scores above every
    cut-off take by a clear margin. A model that answered a constant, at random or
    inverted fails them. The bare "my number is five five five" is not here: in
    espeak's flat voice the model hears it either way (0.09-0.86 over ten takes)."""
    finished = {text: probabilities(model, text) for text in (
        "I would like to book a table for two tonight.", "Thank you very much.",
        "Tell me a story.")}
    cut_off = {text: probabilities(model, text) for text in (
        "the number is five five five and then", "and then I went to the")}
    for text, takes in finished.items():
        assert float(np.median(takes)) > smart.COMPLETE_AT, (text, takes)
    for text, takes in cut_off.items():
        assert max(takes) < 0.3, (text, takes)
    lowest_finished = min(p for takes in finished.values() for p in takes)
    highest_cut_off = max(p for takes in cut_off.values() for p in takes)
    assert lowest_finished > highest_cut_off + 0.25, (finished, cut_off)
    decision = model.decide(padded_speech("Tell me a story."))
    assert decision.complete and decision.cpu_ms > 0 and decision.wall_ms > 0


def test_the_model_gives_the_same_answer_for_the_same_audio(model: smart.SmartTurn) -> None:
    """The variance between takes is the audio's, not the model's."""
    clip = padded_speech("Thank you very much.", lead_ms=500, tail_ms=200)
    assert len({model.decide(clip).probability for _ in range(3)}) == 1


def test_a_missing_model_falls_back_to_silence_and_says_why_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "nowhere" / smart.MODEL_FILE
    with caplog.at_level(logging.WARNING, logger="turnchart.smart_turn"):
        assert smart.load(missing) is None
        assert smart.load(missing) is None
    reason = smart.unavailable_reason(missing)
    assert reason is not None and "is not there" in reason and "_setup.sh" in reason
    assert [r.getMessage() for r in caplog.records] == [
        f"smart turn unavailable, end: smart falls back to silence: {reason}"]
    detector = EnergyDetector(hangover_ms=320)
    gate = TurnGate(detector, smart.load(missing))
    gate.configure(TurnPolicy(end="smart"), {"microphone": "open"})
    assert not gate.smart and detector.hangover_ms == 320


def test_a_damaged_model_file_falls_back_too(tmp_path: Path) -> None:
    bad = tmp_path / smart.MODEL_FILE
    bad.write_bytes(b"not an onnx model")
    assert smart.load(bad) is None
    assert "did not load" in str(smart.unavailable_reason(bad))


def test_the_service_loads_the_model_only_for_a_chart_that_asks(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adapters.server.voice import VoiceFrontEnd
    from engine.chart.chart import compile_text

    calls: list[Any] = []
    monkeypatch.setattr(smart, "load", lambda path=None: calls.append(path) or "model")
    minimal = (Path(__file__).parent / "golden" / "valid" / "minimal.yaml").read_text()
    plain = compile_text(minimal, "plain.yaml")
    asks = compile_text(minimal.replace(
        "    contract: {microphone: open, playback: stopped}\n",
        "    contract: {microphone: open, playback: stopped}\n    turn: {end: smart}\n", 1),
        "smart.yaml")
    front = VoiceFrontEnd.__new__(VoiceFrontEnd)
    front.end_of_turn, front.default_end = None, "silence"
    front.load_end_of_turn(plain)
    assert front.end_of_turn is None and calls == []
    front.load_end_of_turn(asks)
    assert front.end_of_turn == "model" and calls == [None]


async def test_a_smart_state_does_not_cut_off_a_caller_who_pauses_mid_sentence(
        model: smart.SmartTurn) -> None:
    """The same audio through the real handler and silero detector: words that stop
    mid-sentence, 600 ms of silence, the rest. CHAT (end: silence, patience 300 ms) cuts
    it in two; SMART (end: smart, patience 2000 ms) hears one turn, and ends it on the
    model's word (held: false), not on its 2000 ms patience."""
    from adapters.speech.samples import noise, speech
    from adapters.speech.silero import SileroVadFactory
    from adapters.speech.vad import SpeechDetector
    from engine.runtime.logs import ListSink
    from tests.support.waiting import wait_until
    from tests.test_turn_enforcement import finals, open_call, play, state

    factory = SileroVadFactory(preload=1)
    sink = ListSink()
    service, handler = await open_call(sink, lambda: SpeechDetector(factory),
                                       ["a", "b", "c"])
    try:
        service.end_of_turn = model
        said = np.concatenate([noise(300), speech("the number is five five five and then"),
                               noise(600, seed=1), speech("please call me back."),
                               noise(2500, seed=2)])
        await play(handler, said)
        assert await wait_until(lambda: len(finals(sink)) >= 2, 5, 0.02)
        assert finals(sink) == ["a", "b"]

        service.post("caller", "go_smart", {})
        assert await wait_until(lambda: state(service) == "SMART", 5, 0.01)
        await play(handler, said)
        assert await wait_until(lambda: len(finals(sink)) >= 3, 10, 0.02)
        assert finals(sink) == ["a", "b", "c"]
        decisions = [r["data"] for r in sink.of_type("end_of_turn", "caller")]
        assert [d["held"] for d in decisions] == [True, False], decisions
    finally:
        await service.stop()
        factory.close()


def test_the_cut_off_benchmark_splits_a_sentence_at_its_comma() -> None:
    from adapters.speech.samples import speech
    from benchmarks.turn_cutoffs import paused

    before, after = paused("my number is five five five", "one two three four.")
    whole = speech("my number is five five five, one two three four.")
    assert len(before) > 0.8 * smart.SAMPLE_RATE and len(after) > 0.8 * smart.SAMPLE_RATE
    gap_ms = (len(whole) - len(before) - len(after)) / 16
    assert 50 <= gap_ms <= 400, gap_ms   # only espeak's comma gap was taken out

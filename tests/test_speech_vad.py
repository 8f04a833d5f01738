"""Speech onset/offset detection: silero through SpeechDetector, and the detector's rules
on a scripted model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import numpy.typing as npt
import pytest

from adapters.speech.samples import noise, offset_ms, onset_ms, padded_speech, speech, tone
from adapters.speech.silero import SileroVadFactory
from adapters.speech.vad import SpeechDetector, VadEvent

LEAD_MS = 500.0


@pytest.fixture(scope="module")
def factory() -> Iterator[SileroVadFactory]:
    f = SileroVadFactory(preload=1)
    yield f
    f.close()


def run(detector: SpeechDetector, pcm: npt.NDArray[np.int16], frame: int = 320) -> list[VadEvent]:
    events: list[VadEvent] = []
    for at in range(0, len(pcm), frame):
        events += detector.feed(pcm[at : at + frame])
    return events


def kinds(events: Iterable[VadEvent]) -> list[str]:
    return [e.kind for e in events]


@pytest.mark.parametrize("label", ["digital silence", "quiet noise", "loud noise", "tone"])
def test_silence_noise_and_tones_never_start_speech(factory: SileroVadFactory,
                                                    label: str) -> None:
    pcm = {
        "digital silence": np.zeros(48000, dtype=np.int16),
        "quiet noise": noise(3000, sigma=20, seed=1),
        "loud noise": noise(3000, sigma=1000, seed=2),
        "tone": tone(440, 3000, amplitude=8000),
    }[label]
    detector = SpeechDetector(factory)
    assert run(detector, pcm) == []
    assert not detector.speaking and len(detector.preroll()) == 0
    detector.close()


def test_a_spoken_word_starts_confirms_and_ends_at_sensible_times(
        factory: SileroVadFactory) -> None:
    pcm = padded_speech("hello", lead_ms=LEAD_MS, tail_ms=800)
    said_from, said_to = onset_ms(pcm), offset_ms(pcm)
    detector = SpeechDetector(factory, min_speech_ms=200, hangover_ms=320, preroll_ms=160)
    events = run(detector, pcm)
    assert kinds(events) == ["speech_start", "speech_confirmed", "speech_end"]
    start, confirmed, end = (e.t_ms for e in events)
    assert said_from < start < said_from + 200  # measured: about 60 ms after the onset
    assert start + 150 <= confirmed <= start + 300  # 200 ms of speech, counted in 32 ms windows
    assert said_to + 320 - 100 < end < said_to + 320 + 200  # hangover after the last word
    assert not detector.speaking
    detector.close()


def test_preroll_holds_the_word_start_for_stt(factory: SileroVadFactory) -> None:
    pcm = padded_speech("stop", lead_ms=LEAD_MS)
    detector = SpeechDetector(factory, preroll_ms=160)
    fed = 0
    for at in range(0, len(pcm), 320):
        fed = at + 320
        if "speech_start" in kinds(detector.feed(pcm[at:fed])):
            break
    assert detector.speaking
    preroll = detector.preroll()
    # It ends with the audio fed so far and reaches back before the speech onset.
    assert np.array_equal(preroll, pcm[fed - len(preroll) : fed])
    assert (fed - len(preroll)) / 16 < onset_ms(pcm)
    assert len(preroll) >= 160 * 16
    detector.close()


def test_a_100_ms_burst_never_confirms(factory: SileroVadFactory) -> None:
    word = speech("hello")
    start = round(onset_ms(word) * 16)
    burst = word[start : start + 1600]  # the loudest 100 ms of the word: a cough-like blip
    pcm = np.concatenate([noise(LEAD_MS, seed=4), burst, noise(1000, seed=5)])
    detector = SpeechDetector(factory, min_speech_ms=200)
    events = run(detector, pcm)
    assert "speech_confirmed" not in kinds(events)
    assert kinds(events) in ([], ["speech_start", "speech_end"])  # measured: start, then end
    assert not detector.speaking
    detector.close()


@pytest.mark.parametrize("frame", [160, 480, 512, 777, 4000, 10**6])
def test_any_frame_length_gives_the_same_events(factory: SileroVadFactory, frame: int) -> None:
    pcm = padded_speech("what time is it")
    reference = run(SpeechDetector(factory), pcm, frame=512)
    detector = SpeechDetector(factory)
    assert run(detector, pcm, frame=frame) == reference
    assert detector.stream_ms == pytest.approx(1000 * len(pcm) / 16000)
    detector.close()


def test_reset_starts_a_new_stream_with_its_own_clock(factory: SileroVadFactory) -> None:
    pcm = padded_speech("stop")
    detector = SpeechDetector(factory)
    first = run(detector, pcm[: len(pcm) // 2])
    detector.reset()
    assert detector.stream_ms == 0 and not detector.speaking
    assert run(detector, pcm) == run(SpeechDetector(factory), pcm)
    assert kinds(first) == ["speech_start", "speech_confirmed"]
    detector.close()


def test_bytes_frames_are_accepted_and_other_types_refused(factory: SileroVadFactory) -> None:
    pcm = padded_speech("hello")
    detector = SpeechDetector(factory)
    events = [e for at in range(0, len(pcm), 320)
              for e in detector.feed(pcm[at : at + 320].astype("<i2").tobytes())]
    assert kinds(events) == ["speech_start", "speech_confirmed", "speech_end"]
    with pytest.raises(TypeError, match="int16"):
        detector.feed(np.zeros(320, dtype=np.float32))
    detector.close()


def test_factory_reuses_the_models_of_closed_detectors() -> None:
    factory = SileroVadFactory(preload=0)
    a, b = SpeechDetector(factory), SpeechDetector(factory)
    assert factory.created == 2
    run(a, padded_speech("hello"))
    a.close()
    b.close()
    c = SpeechDetector(factory)
    assert factory.created == 2 and factory.idle == 1
    # A reused model starts clean: same events as a fresh one on the same audio.
    pcm = padded_speech("stop")
    assert run(c, pcm) == run(SpeechDetector(SileroVadFactory(preload=0)), pcm)
    c.close()
    factory.close()


def test_threshold_settings_are_checked(factory: SileroVadFactory) -> None:
    with pytest.raises(ValueError, match="offset_threshold"):
        SpeechDetector(factory, onset_threshold=0.3, offset_threshold=0.5)
    with pytest.raises(ValueError, match="must be >= 0"):
        SpeechDetector(factory, hangover_ms=-1)


class ScriptedModel:
    """Returns a scripted probability per 32 ms window (then 0)."""

    window_samples = 512

    def __init__(self, probabilities: list[float]) -> None:
        self.script = list(probabilities)
        self.closed = False

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        assert window.dtype == np.float32 and window.shape == (512,)
        return self.script.pop(0) if self.script else 0.0

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def scripted(probabilities: list[float], **options: float) -> tuple[SpeechDetector,
                                                                    list[VadEvent]]:
    model = ScriptedModel(probabilities)
    detector = SpeechDetector(lambda: model, **options)
    return detector, detector.feed(np.zeros(512 * (len(probabilities) + 15), dtype=np.int16))


def test_hysteresis_single_dips_inside_speech_do_not_end_it() -> None:
    # onset at window 2; dips to 0.1 for two windows (64 ms < hangover) stay in speech.
    probs = [0.1, 0.2, 0.9, 0.4, 0.1, 0.1, 0.6, 0.8, 0.7, 0.5, 0.4, 0.36]
    _, events = scripted(probs, hangover_ms=320, min_speech_ms=200)
    assert kinds(events) == ["speech_start", "speech_confirmed", "speech_end"]
    start, confirmed, end = (e.t_ms for e in events)
    assert start == 3 * 32  # decided at the end of window 2
    assert confirmed == 11 * 32  # window 10 is the 7th at or above offset: 224 ms >= 200 ms
    assert end == (12 + 10) * 32  # 10 quiet windows (320 ms) after the last one, window 11


def test_below_onset_never_starts_even_if_above_offset() -> None:
    _, events = scripted([0.45] * 40)
    assert events == []


def test_short_speech_starts_and_ends_without_confirming() -> None:
    _, events = scripted([0.9, 0.9, 0.9], min_speech_ms=200, hangover_ms=64)
    assert kinds(events) == ["speech_start", "speech_end"]


def test_zero_min_speech_confirms_with_the_start() -> None:
    _, events = scripted([0.9], min_speech_ms=0)
    assert kinds(events)[:2] == ["speech_start", "speech_confirmed"]
    assert events[0].t_ms == events[1].t_ms


def test_close_returns_the_model() -> None:
    detector, _ = scripted([])
    model = detector._model
    detector.close()
    assert isinstance(model, ScriptedModel) and model.closed


def test_voiced_ms_says_whether_speech_goes_on_while_speaking_lasts_the_hangover() -> None:
    # 4 speech windows, then quiet: `speaking` holds for the 320 ms hangover, `voiced_ms`
    # drops to 0 at the first quiet window and counts again when speech comes back.
    model = ScriptedModel([0.9] * 4 + [0.1] * 3 + [0.8] * 2)
    detector = SpeechDetector(lambda: model, min_speech_ms=96, hangover_ms=320)
    voiced = []
    for _ in range(9):
        detector.feed(np.zeros(512, dtype=np.int16))
        voiced.append((detector.speaking, detector.voiced_ms))
    assert voiced == [(True, 32.0), (True, 64.0), (True, 96.0), (True, 128.0),
                      (True, 0.0), (True, 0.0), (True, 0.0), (True, 32.0), (True, 64.0)]
    detector.reset()
    assert detector.voiced_ms == 0.0

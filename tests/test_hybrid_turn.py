"""`end: hybrid`: the words heard so far and the acoustic model decide together when the
caller's turn ends (adapters/turn/gate.py, adapters/turn/words.py).

The word rules are checked on sentences that are in neither turn benchmark; the gate's
decisions with the deterministic energy detector, a scripted model and scripted early
transcripts (what Whisper's speculative decode would have heard)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from adapters.turn.gate import (
    HYBRID_CHECK_MS,
    HYBRID_DISAGREE_MS,
    HYBRID_PATIENCE_MS,
    HYBRID_UNCERTAIN_MS,
    HybridDecision,
    TurnGate,
)
from adapters.turn.words import verdict
from engine.chart.turn import NO_POLICY, TurnPolicy
from tests.support.voice_fakes import EnergyDetector, tone
from tests.test_turn_enforcement import ScriptedModel

FRAME = 320   # 20 ms at 16 kHz
OPEN = {"microphone": "open", "playback": "stopped"}
SPEECH_MS = 400


@pytest.mark.parametrize(("text", "expected"), [
    # cannot end an English sentence: the caller has more to say
    ("Please put it on the", "incomplete"),                    # article
    ("I'd like to speak to someone about my", "incomplete"),  # possessive determiner
    ("We are flying out of", "incomplete"),                   # preposition
    ("I need a room with", "incomplete"),
    ("I want the blue one and", "incomplete"),                 # conjunction
    ("I can come tomorrow but", "incomplete"),
    ("We will cancel if", "incomplete"),
    ("The problem is", "incomplete"),                          # copula after a noun
    ("The doctor says the results will", "incomplete"),        # modal after a noun
    ("I think that's", "incomplete"),                          # contracted auxiliary
    ("Well, I'm", "incomplete"),
    ("Could you give me", "incomplete"),                       # the thing given is missing
    ("Please send us", "incomplete"),
    ("Let me", "incomplete"),
    ("Um", "incomplete"),                                      # hesitation
    ("So I was wondering, uh", "incomplete"),
    ("I would like", "incomplete"),                            # complement missing
    ("We are going to", "incomplete"),
    ("My card number is 4 1 1 1", "incomplete"),               # digits being dictated
    ("The postcode is S W 1", "incomplete"),
    ("My account number is four two seven", "incomplete"),
    ("I'd like to order a pizza,", "incomplete"),              # Whisper trailed off
    ("I was hoping...", "incomplete"),
    # grammatical, but a particle-or-preposition where the object usually follows
    ("Dinner is on", "uncertain"),                             # after "be"
    ("The results were in.", "uncertain"),
    ("It's over", "uncertain"),                                # contracted "be"
    ("They were walking around", "uncertain"),                 # after an -ing verb
    ("He was sitting by.", "uncertain"),
    ("You need to fill in", "uncertain"),                      # modal / to + bare verb
    ("We'll drop off.", "uncertain"),
    ("Could you please switch off", "uncertain"),
    # can end one
    ("Please cancel my order.", "complete"),
    ("Turn the lights off.", "complete"),                      # a particle, not a preposition
    ("The concert is sold out.", "complete"),                  # after a participle
    ("Switch it on.", "complete"),                             # object before: a particle
    ("Please put your coat on.", "complete"),
    ("I give up.", "complete"),                                # pronoun subject + verb
    ("That's what I was worried about.", "complete"),          # stranded after a wh-word
    ("Let me check what's on.", "complete"),
    ("The wedding is in June.", "complete"),
    ("Yes, it is.", "complete"),                               # short answer: pronoun + aux
    ("I think we can.", "complete"),
    ("I don't know where she is.", "complete"),                # wh-clause keeps its copula
    ("That is the one that I asked for.", "complete"),         # stranded in a relative
    ("I think so.", "complete"),
    ("My card number is 4111 1111 1111 1111.", "complete"),    # a full number
    ("I am 42 years old.", "complete"),
    ("Who should I speak to?", "question"),                    # stranding after a wh-word
    ("Where is the nearest pharmacy?", "question"),
    ("Do you deliver on Sundays?", "question"),
    ("", "unknown"),
])
def test_the_words_say_whether_a_sentence_can_end_there(text: str, expected: str) -> None:
    assert verdict(text) == expected


class Words:
    """The early transcript as the handler passes it: None until the decode is in."""

    def __init__(self, text: str, ready_after_quiet_ms: float = 0.0) -> None:
        self.text, self.ready_after = text, ready_after_quiet_ms

    def __call__(self, quiet_ms: float) -> str | None:
        """`quiet_ms`: how long the caller has been silent (the decode starts at once)."""
        return self.text if quiet_ms > 0 and quiet_ms >= self.ready_after else None


async def turn_ends(gate: TurnGate, detector: EnergyDetector, words: Words,
                    policy: TurnPolicy = NO_POLICY, silence_ms: float = 2500
                    ) -> list[float]:
    """Speech, then silence: when (ms of silence) each turn ended."""
    pcm = np.concatenate([tone(SPEECH_MS), np.zeros(int(16 * silence_ms), np.int16)])
    ends: list[float] = []
    for at in range(0, len(pcm), FRAME):
        frame = pcm[at:at + FRAME]
        gate.configure(policy, OPEN)
        kinds = [e.kind for e in detector.feed(frame)]
        if "speech_end" in await gate.listen(frame, kinds, words(at / 16 - SPEECH_MS)):
            ends.append((at + FRAME) / 16 - SPEECH_MS)
    return ends


def hybrid_gate(model: Any = None, notes: list[Any] | None = None, *, words: bool = True
                ) -> tuple[TurnGate, EnergyDetector]:
    detector = EnergyDetector(hangover_ms=320)
    note = None if notes is None else (lambda d, held: notes.append((d, held)))
    return TurnGate(detector, model, note, default_end="hybrid", words=words), detector


async def test_unfinished_words_hold_the_turn_whatever_the_model_says() -> None:
    notes: list[tuple[HybridDecision, bool]] = []
    model = ScriptedModel(0.95)                    # the pitch sounds final
    gate, detector = hybrid_gate(model, notes)
    ends = await turn_ends(gate, detector, Words("My number is"))
    assert ends == [pytest.approx(HYBRID_PATIENCE_MS, abs=25)]
    decision, held = notes[0]
    assert (decision.verdict, decision.wait_ms, held) == ("incomplete", HYBRID_PATIENCE_MS,
                                                          True)


async def test_a_question_ends_at_the_check_silence_sooner_than_plain_silence() -> None:
    gate, detector = hybrid_gate(ScriptedModel(0.1))   # even if the model is unsure
    ends = await turn_ends(gate, detector, Words("What time is it?"))
    assert ends == [pytest.approx(HYBRID_CHECK_MS, abs=25)]
    assert ends[0] < 320


async def test_complete_words_end_early_only_when_the_model_agrees() -> None:
    gate, detector = hybrid_gate(ScriptedModel(0.9))
    assert await turn_ends(gate, detector, Words("I'll have the soup.")) == \
        [pytest.approx(HYBRID_CHECK_MS, abs=25)]
    notes: list[tuple[HybridDecision, bool]] = []
    gate, detector = hybrid_gate(ScriptedModel(0.2), notes)   # they disagree
    assert await turn_ends(gate, detector, Words("I'll have the soup.")) == \
        [pytest.approx(HYBRID_DISAGREE_MS, abs=25)]          # closed with a stop: 240 ms
    assert (notes[0][0].verdict, notes[0][0].probability) == ("complete", 0.2)
    gate, detector = hybrid_gate(ScriptedModel(0.2))
    assert await turn_ends(gate, detector, Words("I'll have the soup")) == \
        [pytest.approx(320, abs=25)]                         # no stop: the server's silence


async def test_words_that_usually_go_on_wait_longer_than_complete_ones() -> None:
    """"Dinner is on" may be finished ("the game is on") but usually has a time or a
    place next: the turn waits 1000 ms whatever the model says, less than incomplete
    words' patience and more than complete words' 240-320 ms."""
    notes: list[tuple[HybridDecision, bool]] = []
    gate, detector = hybrid_gate(ScriptedModel(0.95), notes)
    ends = await turn_ends(gate, detector, Words("Dinner is on."))
    assert ends == [pytest.approx(HYBRID_UNCERTAIN_MS, abs=25)]
    assert (notes[0][0].verdict, notes[0][0].probability) == ("uncertain", None)
    assert HYBRID_DISAGREE_MS < HYBRID_UNCERTAIN_MS < HYBRID_PATIENCE_MS
    gate, detector = hybrid_gate(ScriptedModel(0.95))      # an impatient state: its patience
    assert await turn_ends(gate, detector, Words("Dinner is on."),
                           TurnPolicy(end="hybrid", patience_ms=600)) == \
        [pytest.approx(600, abs=25)]


async def test_the_turn_waits_for_late_words_and_decides_when_they_come() -> None:
    gate, detector = hybrid_gate(ScriptedModel(0.9))
    ends = await turn_ends(gate, detector, Words("Thanks a lot.", ready_after_quiet_ms=260))
    assert ends == [pytest.approx(260, abs=25)]


async def test_the_caller_going_on_continues_the_same_utterance() -> None:
    gate, detector = hybrid_gate(ScriptedModel(0.9))
    pcm = np.concatenate([tone(SPEECH_MS), np.zeros(16 * 700, np.int16), tone(300),
                          np.zeros(16 * 600, np.int16)])
    heard = "I am flying to"
    kinds: list[str] = []
    for at in range(0, len(pcm), FRAME):
        frame = pcm[at:at + FRAME]
        gate.configure(TurnPolicy(), OPEN)
        if at >= 16 * (SPEECH_MS + 700):
            heard = "I am flying to Boston tomorrow."
        quiet = detector.silence_ms
        kinds += await gate.listen(frame, [e.kind for e in detector.feed(frame)],
                                   heard if quiet > 0 else None)
    assert kinds.count("speech_start") == 1 and kinds.count("speech_end") == 1


async def test_without_a_model_the_words_decide_alone() -> None:
    gate, detector = hybrid_gate(None)
    assert await turn_ends(gate, detector, Words("Where's the station?")) == \
        [pytest.approx(HYBRID_CHECK_MS, abs=25)]
    gate, detector = hybrid_gate(None)
    assert await turn_ends(gate, detector, Words("I'll have the soup.")) == \
        [pytest.approx(320, abs=25)]
    gate, detector = hybrid_gate(None)
    assert await turn_ends(gate, detector, Words("I'll have the")) == \
        [pytest.approx(HYBRID_PATIENCE_MS, abs=25)]


async def test_without_early_transcripts_hybrid_is_plain_silence() -> None:
    """The pocketsphinx backend has no early decode: silence decides, model unused."""
    model = ScriptedModel(0.9)
    gate, detector = hybrid_gate(model, words=False)
    gate.configure(TurnPolicy(), OPEN)
    assert (gate.mode, detector.hangover_ms) == ("silence", 320)
    assert await turn_ends(gate, detector, Words("What time is it?")) == \
        [pytest.approx(320, abs=25)]
    assert model.heard == []


async def test_the_server_default_applies_only_where_the_state_leaves_end_unset() -> None:
    gate, detector = hybrid_gate(ScriptedModel(0.9))
    gate.configure(TurnPolicy(), OPEN)
    assert (gate.mode, detector.hangover_ms) == ("hybrid", HYBRID_CHECK_MS)
    gate.configure(TurnPolicy(end="silence"), OPEN)
    assert (gate.mode, detector.hangover_ms) == ("silence", 320)
    gate.configure(TurnPolicy(end="smart"), OPEN)
    assert gate.mode == "smart"
    # a patient state holds unfinished words longer
    assert await turn_ends(gate, detector, Words("My number is"),
                           TurnPolicy(end="hybrid", patience_ms=2000)) == \
        [pytest.approx(2000, abs=25)]


async def test_real_audio_a_question_ends_sooner_and_a_mid_sentence_pause_is_held(
        whisper_stt: Any) -> None:
    """The real parts end to end, in audio time: flite's slt voice (deterministic), the
    silero detector, Smart Turn v3.2 and Whisper tiny.en's early decode (taken as ready at
    the frame it started, so the load does not matter). "What time is it?" ends at the
    check silence, sooner than 320 ms silence endpointing ends it on the same audio;
    "my number is, (700 ms) five five five, (2.5 s)" is one turn, not cut at the pause."""
    from adapters.speech.flite import FliteTTS
    from adapters.speech.samples import noise
    from adapters.speech.silero import SileroVadFactory
    from adapters.speech.vad import SpeechDetector
    from adapters.turn import smart
    from benchmarks.paused_speech import split_at_pause
    from benchmarks.turn_cutoffs import EarlyWords, run

    model = smart.load()
    assert model is not None, smart.unavailable_reason()
    voice = FliteTTS(voice="slt", output_rate=16_000)
    factory = SileroVadFactory(preload=1)
    detector = SpeechDetector(factory)
    try:
        notes: list[HybridDecision] = []
        gate = TurnGate(detector, model, lambda decision, held: notes.append(decision),
                        default_end="hybrid", words=True)
        question = voice.synthesize_all("What time is it?")[1]
        pcm = np.concatenate([noise(300), question, noise(1500, seed=1)])
        spoken_to = 300 + len(question) / 16
        hybrid = await run(gate, detector, TurnPolicy(), pcm,
                           EarlyWords(whisper_stt, instant=True))
        silence = await run(gate, detector, TurnPolicy(end="silence"), pcm)
        assert len(hybrid) == len(silence) == 1, (hybrid, silence)
        assert hybrid[0] < silence[0] - 100, (hybrid, silence)
        assert hybrid[0] - spoken_to < 320
        assert [d.verdict for d in notes] == ["question"], notes
        notes.clear()

        first, rest = split_at_pause(voice.synthesize_all("My number is, five five five.")[1],
                                     len(voice.synthesize_all("My number is")[1]), 16_000)
        pcm = np.concatenate([noise(300), first, noise(700, seed=2), rest,
                              noise(2500, seed=3)])
        resumed_at = 300 + (len(first) + 16 * 700) / 16
        held = await run(gate, detector, TurnPolicy(), pcm,
                         EarlyWords(whisper_stt, instant=True))
        assert len(held) == 1 and held[0] > resumed_at, held
        assert {d.verdict for d in notes} == {"incomplete"}, notes   # "My number is..."
        cut = await run(gate, detector, TurnPolicy(end="silence"), pcm)
        assert len(cut) == 2, cut   # plain silence cuts it at the pause: the test shows that
    finally:
        detector.close()
        factory.close()

"""The offline responder: intents, grammar phrases, knowledge retrieval, the
builtin answers, the concurrency of intent and retrieval, and settings."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.responder import (
    BuiltinResponder,
    IntentResult,
    Knowledge,
    KnowledgeError,
    OpenAICompatibleResponder,
    ResponderConfigError,
    ResponderError,
    ResponderSettings,
    build_responder,
    detect_intent,
    grammar_phrases,
)
from adapters.responder.builtin import FALLBACK, STORIES
from adapters.responder.intents import KEYWORD, RULES
from adapters.responder.knowledge import Entry, Hit
from adapters.responder.text import normalise, sentences, words
from adapters.speech.grammar import normalize_phrase
from engine.runtime.behaviours import respond
from engine.runtime.clock import VirtualClock
from engine.runtime.context import ActivityContext
from engine.runtime.ports import Responder
from engine.tools.fakes import fake_ports

AFTERNOON = datetime(2024, 5, 17, 15, 7)


def fixed_clock(now: datetime = AFTERNOON) -> Any:
    return lambda: now


async def collect(responder: Responder, text: str, session_id: str = "s1") -> list[str]:
    return [piece async for piece in responder.answer(text, session_id)]


# --- intents -------------------------------------------------------------------------------

@pytest.mark.parametrize(("phrase", "intent"),
                         [(p, rule.name) for rule in RULES for p in rule.phrases])
def test_every_grammar_phrase_is_its_own_intent_exactly(phrase: str, intent: str) -> None:
    assert detect_intent(phrase) == IntentResult(intent, 1.0, phrase)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "intent"), [
    ("Hello!", "greeting"),
    ("Hi there", "greeting"),
    ("hey, good morning", "greeting"),
    ("What time is it?", "time"),
    ("What's the time?", "time"),
    ("could you tell me the time please", "time"),
    ("what does the clock say", "time"),
    ("Tell me a story about dragons.", "story"),
    ("I would like a bedtime story", "story"),
    ("help", "help"),
    ("can you help me", "help"),
    ("What can you do?", "help"),
    ("Thank you so much!", "thanks"),
    ("thanks a lot", "thanks"),
    ("Goodbye.", "goodbye"),
    ("ok bye", "goodbye"),
    ("see you later alligator", "goodbye"),
    ("STOP", "stop"),
    ("please stop talking", "stop"),
    ("shut up", "stop"),
    ("be quiet now", "stop"),
    ("hi, what time is it?", "time"),  # the phrase covering more of the utterance wins
])
def test_paraphrases_find_their_intent(text: str, intent: str) -> None:
    found = detect_intent(text)
    assert found is not None and found.name == intent, found


@pytest.mark.parametrize("text", ["", "   ", "?!", "the weather in paris", "history of rome",
                                  "this is high time"])
def test_no_intent_for_unrelated_words(text: str) -> None:
    found = detect_intent(text)
    # "time" alone is not asking for the time; "history" is not "story"; "high" is not "hi"
    assert found is None, found


def test_confidence_orders_exact_phrase_contained_phrase_keyword() -> None:
    exact = detect_intent("what time is it")
    contained = detect_intent("excuse me what time is it")
    keyword = detect_intent("tell me the time")
    assert exact and contained and keyword
    assert exact.confidence == 1.0 > contained.confidence > keyword.confidence == KEYWORD


def test_a_tie_goes_to_the_earlier_rule_so_stop_beats_chitchat() -> None:
    found = detect_intent("stop hello")
    assert found is not None and found.name == "stop"


def test_grammar_phrases_are_lower_case_words_unique_and_cover_the_intents() -> None:
    phrases = grammar_phrases()
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", p) for p in phrases), phrases
    assert len(phrases) == len(set(phrases))
    for needed in ("hello", "hi", "stop", "what time is it", "tell me a story", "help",
                   "thank you", "goodbye"):
        assert needed in phrases
    assert {detect_intent(p).name for p in phrases} == {r.name for r in RULES}  # type: ignore[union-attr]
    assert all(len(p.split()) <= 4 for p in phrases)  # short, for a small STT grammar


def test_words_normalise_case_punctuation_and_contractions() -> None:
    assert words("What’s the TIME, please?!") == ["what", "is", "the", "time", "please"]
    assert words("don't stop") == ["do", "not", "stop"]


def test_sentences_split_and_join_back_exactly() -> None:
    text = "One. Two!  Three? Four"
    assert sentences(text) == ["One. ", "Two!  ", "Three? ", "Four"]
    assert "".join(sentences(text)) == text
    assert sentences("") == []


# --- knowledge -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return Knowledge.default()


def test_shipped_knowledge_loads(knowledge: Knowledge) -> None:
    assert len(knowledge) >= 8
    assert {"turnchart", "barge-in", "change-flow"} <= {e.id for e in knowledge.entries}


@pytest.mark.parametrize(("query", "entry_id"), [
    ("what is turnchart", "turnchart"),
    ("What is barge-in?", "barge-in"),
    ("can I interrupt you while you talk", "barge-in"),
    ("how do I change the conversation flow", "change-flow"),
    ("where do I edit the yaml chart", "change-flow"),
    ("what does a contract do to the microphone", "contract"),
    ("what happens to a stale event", "stale-events"),
    ("how many sessions can it handle with redis", "scale-out"),
    ("does this work without internet", "offline"),
    ("at what temperature does water boil", "water-boiling"),
    ("how far away is the moon", "earth-moon"),
    ("how many days in a leap year", "days-in-year"),
])
def test_retrieval_ranks_the_right_entry_first(knowledge: Knowledge, query: str,
                                               entry_id: str) -> None:
    hits = knowledge.search(query, k=3)
    assert hits and hits[0].entry.id == entry_id, [(h.entry.id, h.score) for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_knowledge_questions_as_grammar_phrases_get_their_own_answer(
        knowledge: Knowledge) -> None:
    phrases = knowledge.grammar_phrases()
    assert len(phrases) == len(knowledge) == len(set(phrases))
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", p) for p in phrases), phrases
    assert "what is barge in" in phrases
    assert not set(phrases) & set(grammar_phrases())
    builtin = BuiltinResponder(knowledge, clock_now=fixed_clock())
    for phrase, entry in zip(phrases, knowledge.entries, strict=True):
        assert knowledge.search(phrase)[0].entry.id == entry.id
        assert "".join(await collect(builtin, phrase)) == entry.answer, phrase


def test_retrieval_finds_nothing_for_stopwords_or_unknown_words(knowledge: Knowledge) -> None:
    assert knowledge.search("what is it", k=3) == []
    assert knowledge.search("zebra xylophone", k=3) == []
    assert knowledge.search("", k=3) == []
    assert knowledge.search("turnchart", k=0) == []


def test_retrieval_is_deterministic_and_breaks_ties_by_id() -> None:
    twins = Knowledge([Entry("b", "Where is the lighthouse?", "B"),
                       Entry("a", "Where is the lighthouse?", "A"),
                       Entry("c", "Unrelated question", "C")])
    assert [h.entry.id for h in twins.search("lighthouse", k=5)] == ["a", "b"]
    assert twins.search("lighthouse", k=1) == twins.search("lighthouse", k=1)


def test_keywords_find_an_entry_and_count_more_than_question_words() -> None:
    kb = Knowledge([Entry("q", "Which colour is the sky?", "Blue."),
                    Entry("k", "Something else", "Green.", keywords=("sky",))])
    hits = kb.search("sky", k=2)
    assert [h.entry.id for h in hits] == ["k", "q"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kb.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> tuple[str, ...]:
    with pytest.raises(KnowledgeError) as info:
        Knowledge.load(path)
    return info.value.problems


def test_knowledge_yaml_syntax_error_points_at_file_line_col(tmp_path: Path) -> None:
    path = write(tmp_path, "- id: a\n  question: [unclosed\n  answer: x\n")
    [problem] = problems_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: invalid YAML", problem), problem


def test_knowledge_entry_problems_each_carry_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([
        "- id: ok",                       # 1
        "  question: fine",               # 2
        "  answer: fine",                 # 3
        "- id: no-answer",                # 4
        "  question: q",                  # 5
        "- id: extra",                    # 6
        "  question: q",                  # 7
        "  answer: a",                    # 8
        "  colour: red",                  # 9
        "- id: ok",                       # 10
        "  question: again",              # 11
        "  answer: again",                # 12
        "- id: kw",                       # 13
        "  keywords: sky",                # 14
        "  answer: a",                    # 15
        "- just text",                    # 16
        "- id: nothing-to-find-by",       # 17
        "  answer: a",                    # 18
        "- id: twice",                    # 19
        "  question: q",                  # 20
        "  question: q2",                 # 21
        "  answer: a",                    # 22
        "",
    ]))
    problems = problems_of(path)
    p = str(path)
    assert problems == (
        f"{p}:4:3: missing field 'answer'",
        f"{p}:9:3: unknown field 'colour'; expected one of id, question, keywords, answer",
        f"{p}:10:3: duplicate id 'ok' (first at {p}:1:3)",
        f"{p}:14:13: 'keywords' must be a list of words or phrases",
        f"{p}:16:3: each entry must be a mapping with id, question and/or keywords, and answer",
        f"{p}:17:3: entry needs a question or keywords to be found by",
        f"{p}:21:3: duplicate field 'question'",
    )


def test_knowledge_file_must_be_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "id: a\nanswer: b\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:1:1: a knowledge file is a list of entries")


def test_missing_or_binary_knowledge_file_is_a_clear_error(tmp_path: Path) -> None:
    [missing] = problems_of(tmp_path / "nope.yaml")
    assert missing == f"{tmp_path / 'nope.yaml'}: cannot read knowledge file: " \
                      "No such file or directory"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    [problem] = problems_of(binary)
    assert problem.startswith(f"{binary}: not UTF-8 text")


def test_knowledge_values_stay_the_text_written(tmp_path: Path) -> None:
    kb = Knowledge.load(write(tmp_path, "- id: 1\n  question: on\n  answer: yes\n"))
    assert kb.entries == (Entry("1", "on", "yes"),)
    assert Knowledge.load(write(tmp_path, "# nothing yet\n")).entries == ()


def test_deeply_nested_knowledge_is_refused_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "[" * 1100 + "]" * 1100)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}")


# --- builtin responder ---------------------------------------------------------------------

@pytest.fixture
def builtin(knowledge: Knowledge) -> BuiltinResponder:
    return BuiltinResponder(knowledge, clock_now=fixed_clock())


async def test_builtin_implements_the_responder_port(builtin: BuiltinResponder) -> None:
    port: Responder = builtin
    assert await collect(port, "hello") == ["Hello! ", "How can I help you?"]


@pytest.mark.parametrize("text", ["hello", "what time is it", "tell me a story", "help",
                                  "thank you", "goodbye", "what is barge-in",
                                  "gibberish words", "", "Tell me a story about a cat"])
async def test_builtin_answers_are_deterministic_non_empty_sentences(
        builtin: BuiltinResponder, knowledge: Knowledge, text: str) -> None:
    first = await collect(builtin, text)
    again = await collect(BuiltinResponder(knowledge, clock_now=fixed_clock()), text, "other")
    assert first == again
    assert first and all(piece.strip() for piece in first)
    assert "".join(first) == "".join(first).strip()


@pytest.mark.parametrize("text", ["stop", "Stop.", "please stop talking", "be quiet"])
async def test_stop_is_answered_with_silence(builtin: BuiltinResponder, text: str) -> None:
    # said over an answer (the barge-in already stopped it), "stop" must not start a new one
    assert await collect(builtin, text) == []


@pytest.mark.parametrize(("now", "said"), [
    (datetime(2024, 5, 17, 15, 7), "It is 3:07 PM."),
    (datetime(2024, 5, 17, 0, 5), "It is 12:05 AM."),
    (datetime(2024, 5, 17, 12, 0), "It is 12:00 PM."),
    (datetime(2024, 5, 17, 9, 30), "It is 9:30 AM."),
])
async def test_time_comes_from_the_injected_clock(knowledge: Knowledge, now: datetime,
                                                  said: str) -> None:
    responder = BuiltinResponder(knowledge, clock_now=fixed_clock(now))
    assert await collect(responder, "what time is it?") == [said]


async def test_story_is_two_or_three_sentences_streamed_one_by_one(
        builtin: BuiltinResponder) -> None:
    pieces = await collect(builtin, "tell me a story")
    assert 2 <= len(pieces) <= 3
    assert "".join(pieces) in STORIES
    assert all(re.search(r"[.!?]\s*$", p) for p in pieces)


async def test_unknown_intent_falls_back_to_knowledge_then_to_a_polite_miss(
        builtin: BuiltinResponder, knowledge: Knowledge) -> None:
    barge = next(e for e in knowledge.entries if e.id == "barge-in")
    assert "".join(await collect(builtin, "what is barge-in")) == barge.answer
    assert "".join(await collect(builtin, "purple elephants dancing")) == FALLBACK
    empty = BuiltinResponder(Knowledge([]), clock_now=fixed_clock())
    assert "".join(await collect(empty, "what is barge-in")) == FALLBACK


async def test_a_phrase_intent_beats_knowledge_but_knowledge_beats_a_keyword(
        builtin: BuiltinResponder, knowledge: Knowledge) -> None:
    assert await collect(builtin, "what time is it on the moon") == ["It is 3:07 PM."]
    # "days ... year" is knowledge; the keyword rule for "time" must not steal it
    days = next(e for e in knowledge.entries if e.id == "days-in-year")
    assert "".join(await collect(builtin, "what time of year has more days")) == days.answer


class Gate:
    """Two slow fakes that each wait for the other to have started: they can only both
    finish if they run at the same time. Run one after the other, they would hang."""

    def __init__(self) -> None:
        self.intent_started = asyncio.Event()
        self.retrieval_started = asyncio.Event()
        self.order: list[str] = []

    async def detect(self, text: str) -> IntentResult | None:
        self.order.append("intent:start")
        self.intent_started.set()
        await self.retrieval_started.wait()
        self.order.append("intent:end")
        return None

    async def retrieve(self, text: str) -> list[Hit]:
        self.order.append("retrieval:start")
        self.retrieval_started.set()
        await self.intent_started.wait()
        self.order.append("retrieval:end")
        return [Hit(Entry("slow", "slow question", "From the slow retriever."), 1.0)]


async def test_intent_and_retrieval_run_concurrently() -> None:
    gate = Gate()
    responder = BuiltinResponder(Knowledge([]), clock_now=fixed_clock(),
                                 detect=gate.detect, retrieve=gate.retrieve)
    async with asyncio.timeout(5):  # sequential execution would deadlock, not just be slow
        pieces = await collect(responder, "anything")
    assert pieces == ["From the slow retriever."]
    assert set(gate.order[:2]) == {"intent:start", "retrieval:start"}
    assert set(gate.order[2:]) == {"intent:end", "retrieval:end"}


async def test_a_failing_stage_cancels_the_other_and_names_itself() -> None:
    cancelled = asyncio.Event()

    async def detect(text: str) -> IntentResult | None:
        await asyncio.sleep(0)
        raise ConnectionError("nlu service down")

    async def retrieve(text: str) -> list[Hit]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return []

    responder = BuiltinResponder(Knowledge([]), detect=detect, retrieve=retrieve)
    with pytest.raises(ResponderError, match="intent detection failed: ConnectionError: nlu "
                                             "service down"):
        await collect(responder, "hello")
    assert cancelled.is_set()


def activity_context(responder: Responder, text: str, posted: list[tuple[str, Any]]
                     ) -> ActivityContext:
    clock = VirtualClock()
    ports = fake_ports(clock)
    ports.responder = responder
    return ActivityContext(
        session_id="s1", activity="respond", state="THINKING", epoch=1, correlation_id="c1",
        payload={"text": text}, ports=ports, clock=clock, log=lambda *a: None,
        post=lambda event, payload: posted.append((event, payload)),
        emit_audio=lambda chunk: asyncio.sleep(0, True))


async def test_the_engine_respond_activity_gets_the_whole_answer(
        builtin: BuiltinResponder) -> None:
    posted: list[tuple[str, Any]] = []
    await respond(activity_context(builtin, "tell me a story", posted))
    [(event, payload)] = posted
    assert event == "response_ready" and payload["text"] in STORIES


# --- settings ------------------------------------------------------------------------------

def test_default_settings_build_the_offline_responder() -> None:
    responder = build_responder(ResponderSettings())
    assert isinstance(responder, BuiltinResponder)
    assert len(responder.knowledge) >= 8


def test_openai_settings_need_url_and_model() -> None:
    with pytest.raises(ValidationError) as info:
        ResponderSettings(kind="openai")
    message = str(info.value)
    assert "kind 'openai' needs base_url" in message and "needs model" in message


def test_build_refuses_an_incomplete_openai_block_even_unvalidated() -> None:
    settings = ResponderSettings.model_construct(kind="openai", base_url=None, model="m")
    with pytest.raises(ResponderConfigError, match="responder: kind 'openai' needs base_url"):
        build_responder(settings)


def test_unknown_settings_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ResponderSettings.model_validate({"kind": "builtin", "api_key": "x"})
    with pytest.raises(ValidationError, match="kind"):
        ResponderSettings.model_validate({"kind": "gpt"})
    with pytest.raises(ValidationError, match="timeout_s"):
        ResponderSettings.model_validate({"timeout_s": 0})


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it() -> None:
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(ValidationError) as info:
        ResponderSettings(kind="openai", base_url="http://127.0.0.1:1/v1", model="m",
                          api_key_env=secret)
    assert "NAME of an environment variable" in str(info.value)
    assert secret not in str(info.value)


def test_api_key_comes_from_the_named_environment_variable() -> None:
    secret = "sk-test-very-secret"
    settings = ResponderSettings(kind="openai", base_url="http://127.0.0.1:9/v1", model="m",
                                 api_key_env="TURNCHART_TEST_KEY", timeout_s=3)
    with pytest.raises(ResponderConfigError, match=r"\$TURNCHART_TEST_KEY.*not set"):
        build_responder(settings, environ={})
    responder = build_responder(settings, environ={"TURNCHART_TEST_KEY": secret})
    assert isinstance(responder, OpenAICompatibleResponder)
    assert responder.timeout_s == 3
    assert str(responder.url) == "http://127.0.0.1:9/v1/chat/completions"
    assert secret not in repr(responder)


def test_a_bad_base_url_is_a_config_error() -> None:
    settings = ResponderSettings(kind="openai", base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ResponderConfigError, match="base_url must be an http"):
        build_responder(settings)


async def test_a_broken_knowledge_file_is_reported_and_the_server_keeps_answering(
        tmp_path: Path) -> None:
    path = write(tmp_path, "- id: a\n  answer: b\n  question: [\n")
    reported: list[str] = []
    responder = build_responder(ResponderSettings(knowledge_path=str(path)),
                                on_problem=reported.append, clock_now=fixed_clock())
    [report] = reported
    assert "answering without it" in report and f"{path}:" in report
    assert await collect(responder, "what time is it") == ["It is 3:07 PM."]


def test_a_broken_knowledge_file_is_logged_by_default(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    build_responder(ResponderSettings(knowledge_path=str(tmp_path / "missing.yaml")))
    [record] = caplog.records
    assert record.name == "turnchart.responder" and record.levelname == "ERROR"
    assert "missing.yaml: cannot read knowledge file" in record.getMessage()


@pytest.mark.parametrize("text", [
    "tell me a joke", "I am planning a trip to Paris next week", "turn off the lights",
    "what's the weather like today", "play some music",
    "what time does the museum open on Monday"])   # 'what'+'time' is only a keyword match
async def test_an_unknown_request_gets_an_honest_answer_never_a_known_one(
        builtin: BuiltinResponder, text: str) -> None:
    """Open-vocabulary speech (issue 14): no nearest known answer for what we cannot do
    ("turn off the lights" shares only 'light' with a fact about the speed of light)."""
    assert "".join(await collect(builtin, text)) == FALLBACK
    assert FALLBACK == "Sorry, I can't help with that yet."


def test_numbers_are_spelled_where_phrases_are_matched() -> None:
    assert normalise("The 10 of clubs") == "the ten of clubs"
    assert normalise("42, 105 and 300 or 2026") == (
        "forty two one hundred five and three hundred or 2026")
    assert normalize_phrase("10 of Clubs!") == "ten of clubs"


@pytest.mark.parametrize(("text", "start"), [
    ("tell me the time", "It is"), ("what does the clock say", "It is"),
    ("I want a story", "story"), ("cheers mate", "You are welcome")])
async def test_short_keyword_requests_are_still_understood(
        builtin: BuiltinResponder, text: str, start: str) -> None:
    answer = "".join(await collect(builtin, text))
    assert answer in STORIES if start == "story" else answer.startswith(start)

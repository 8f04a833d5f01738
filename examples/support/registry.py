"""The support line's own behaviours, next to turnchart's (engine/runtime/behaviours.py).

- guard `understood`: the FAQ (`faq.yaml`) has an answer for the caller's words
  (`stt_final`'s `text`). Its examples (`turnchart paths`, docs/paths.md) come
  from the FAQ itself: words of its first entry hold, words none has fail;
- effect `note_misunderstanding`: one `misunderstood` log line per question the
  line could not place (the chart counts them with its states);
- activity `answer_from_faq`: looks the caller's words up in the FAQ, logs
  `faq_lookup` and speaks the answer, then posts `playback_done`;
- activity `ask_again`: says "sorry, say it another way", then posts `playback_done`;
- activity `hand_over`: tells the caller a person takes over, logs `handed_over`
  with what they asked (where a real line would queue the call for an agent),
  then posts `playback_done`.

The lookup is a guard, not an activity that posts its result: it takes no time,
so the chart decides on the caller's words in one step, and `paths` can choose
words for each outcome from the guard's examples.

`registry()` is the factory `--registry examples.support.registry:registry` names:
it reads the FAQ once, so a broken FAQ file stops the server at start.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.chart.registry import GuardInput, Registry
from engine.runtime.behaviours import default_registry, speak
from engine.runtime.context import ActivityContext, EffectContext

FAQ_PATH = Path(__file__).with_name("faq.yaml")
NOT_UNDERSTOOD = "Sorry, I did not get that. Could you say it another way?"
HANDOVER = "Sorry, I still did not get that. I am putting you through to a colleague."


@dataclass(frozen=True)
class Entry:
    topic: str
    ask: tuple[str, ...]
    answer: str


class FAQError(ValueError):
    """The FAQ file cannot be used; the message names the file and the entry."""


def load_faq(path: Path = FAQ_PATH) -> tuple[Entry, ...]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FAQError(f"{path}: cannot read the FAQ: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise FAQError(f"{path}: the FAQ must be a non-empty list of entries")
    entries = []
    for n, item in enumerate(raw, 1):
        ok = isinstance(item, dict) and set(item) == {"topic", "ask", "answer"} \
            and isinstance(item["topic"], str) and isinstance(item["answer"], str) \
            and isinstance(item["ask"], list) and item["ask"] \
            and all(isinstance(a, str) and a.strip() for a in item["ask"])
        if not ok:
            raise FAQError(f"{path}: entry {n} must have topic (text), ask (a list of words "
                           "or phrases) and answer (text), and nothing else")
        entries.append(Entry(item["topic"], tuple(a.lower().strip() for a in item["ask"]),
                             item["answer"].strip()))
    return tuple(entries)


def best_answer(faq: Sequence[Entry], text: str) -> Entry | None:
    """The entry whose `ask` words and phrases occur most often in `text` (whole
    words, any case); None when none does."""
    words = " ".join(re.findall(r"[a-z0-9']+", text.lower()))
    best, score = None, 0
    for entry in faq:
        hits = sum(1 for phrase in entry.ask if re.search(rf"\b{re.escape(phrase)}\b", words))
        if hits > score:
            best, score = entry, hits
    return best


def understood_with(faq: Sequence[Entry]) -> Any:
    def understood(event: GuardInput) -> bool:
        """True when the FAQ has an answer for the caller's words."""
        return best_answer(faq, str(event.payload.get("text", ""))) is not None
    return understood


def understood_examples(faq: Sequence[Entry]) -> dict[bool, dict[str, Any]]:
    """Words that `understood` takes (the first entry's first phrase, asked) and words
    it does not (no entry has them), from the FAQ in use, for `turnchart paths`."""
    held = {"text": f"a question about {faq[0].ask[0]}", "is_final": True}
    for words in ("hello there", "mmm", "xyzzy plugh"):
        if best_answer(faq, words) is None:
            return {True: held, False: {"text": words, "is_final": True}}
    return {True: held}          # an FAQ that knows every word: that outcome is not covered


async def note_misunderstanding(ctx: EffectContext) -> None:
    """Log the question the line could not place (one line per misunderstanding)."""
    ctx.log("INFO", "misunderstood", f"🤷 not in the FAQ ({ctx.state})",
            {"state": ctx.state, "heard": ctx.payload.get("text", "")})


def answer_from_faq_with(faq: Sequence[Entry]) -> Any:
    async def answer_from_faq(ctx: ActivityContext) -> None:
        """Look the caller's words up in the FAQ and speak the answer; post `playback_done`."""
        heard = str(ctx.payload.get("text", ""))
        entry = best_answer(faq, heard)
        answer = entry.answer if entry else NOT_UNDERSTOOD
        ctx.log("INFO", "faq_lookup", f"📖 {entry.topic if entry else 'no answer'}",
                {"heard": heard, "topic": entry.topic if entry else None, "answer": answer})
        await speak(dataclasses.replace(ctx, payload={"text": answer}))
    return answer_from_faq


async def ask_again(ctx: ActivityContext) -> None:
    """Ask the caller to say it another way; post `playback_done`."""
    await speak(dataclasses.replace(ctx, payload={"text": NOT_UNDERSTOOD}))


async def hand_over(ctx: ActivityContext) -> None:
    """Tell the caller a person takes over, log the handover; post `playback_done`."""
    ctx.log("WARNING", "handed_over", "🙋 two misunderstandings in a row: over to a person",
            {"heard": ctx.payload.get("text", ""), "queue": "support"})
    await speak(dataclasses.replace(ctx, payload={"text": HANDOVER}))


def build_registry(faq_path: Path = FAQ_PATH) -> Registry:
    """turnchart's behaviours plus the support line's, answering from `faq_path`."""
    faq = load_faq(faq_path)
    reg = default_registry()
    reg.guard("understood", examples=understood_examples(faq))(understood_with(faq))
    reg.effect()(note_misunderstanding)
    reg.activity("answer_from_faq")(answer_from_faq_with(faq))
    reg.activity()(ask_again)
    reg.activity()(hand_over)
    return reg


def registry() -> Registry:
    """The factory for `--registry examples.support.registry:registry`."""
    return build_registry()

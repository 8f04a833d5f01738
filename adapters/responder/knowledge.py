"""Retrieval over a small local knowledge file: BM25 over questions and keywords.

Pure Python and deterministic (ties break by entry id), so an answer never
depends on dict order or a random seed. The file is read through PyYAML's
node tree rather than `safe_load`, which keeps every value's line and column
for error messages and keeps `yes`/`no`/`on` as the text that was written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from adapters.responder.errors import KnowledgeError
from adapters.responder.text import normalise, words

DEFAULT_KNOWLEDGE = Path(__file__).resolve().parent / "knowledge.yaml"

_FIELDS = ("id", "question", "keywords", "answer")
_K1, _B = 1.2, 0.75
_KEYWORD_WEIGHT = 2
"""Keywords are chosen by a person to say what an entry is about: they count double."""
_STOPWORD_TEXT = """
a about am an and any are as at be been but by can could did do does for from had has have
he her him his how i if in into is it its me my no not of on or our please she so tell than
that the their them then there these they this those to us was we were what when where which
who whom why will with would you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class Entry:
    """One question and its answer; `keywords` widen what the entry is found by."""

    id: str
    question: str
    answer: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hit:
    """An entry that shares words with the query; higher `score` is more relevant."""

    entry: Entry
    score: float
    coverage: float = 1.0
    """The share of the query's content words that the entry has (0..1]."""


def terms(text: str) -> list[str]:
    """Content words, lightly stemmed, so "states" finds "state" and "is" finds nothing."""
    return [_stem(w) for w in words(text) if w not in _STOPWORDS]


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


class Knowledge:
    """An immutable, indexed set of entries; `search` ranks them against a text."""

    def __init__(self, entries: Sequence[Entry], source: str = "<memory>") -> None:
        self.entries: tuple[Entry, ...] = tuple(entries)
        self.source = source
        self._tf: list[Counter[str]] = []
        for entry in self.entries:
            doc = Counter(terms(entry.question))
            for keyword in entry.keywords:
                for term in terms(keyword):
                    doc[term] += _KEYWORD_WEIGHT
            self._tf.append(doc)
        self._len = [sum(tf.values()) for tf in self._tf]
        self._avg_len = (sum(self._len) / len(self._len)) if self._len else 0.0
        df: Counter[str] = Counter()
        for tf in self._tf:
            df.update(tf.keys())
        n = len(self.entries)
        self._idf = {t: math.log(1.0 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}

    @classmethod
    def load(cls, path: str | Path) -> Knowledge:
        """Read a YAML list of entries; raise `KnowledgeError` listing every problem."""
        return cls(load_entries(path), source=str(path))

    @classmethod
    def default(cls) -> Knowledge:
        """The shipped knowledge about turnchart and a few general facts."""
        return cls.load(DEFAULT_KNOWLEDGE)

    def search(self, text: str, k: int = 1) -> list[Hit]:
        """Up to `k` entries sharing a content word with `text`, best first, ties by id."""
        query = sorted(set(terms(text)))
        if k <= 0 or not query:
            return []
        hits: list[Hit] = []
        for entry, tf, length in zip(self.entries, self._tf, self._len, strict=True):
            score = 0.0
            found = 0
            for term in query:
                freq = tf.get(term, 0)
                if freq:
                    found += 1
                    norm = _K1 * (1.0 - _B + _B * length / self._avg_len)
                    score += self._idf[term] * freq * (_K1 + 1.0) / (freq + norm)
            if score > 0.0:
                hits.append(Hit(entry, round(score, 6), round(found / len(query), 6)))
        hits.sort(key=lambda h: (-h.score, h.entry.id))
        return hits[:k]

    def grammar_phrases(self) -> list[str]:
        """The questions as lower-case words, unique: for an STT grammar that should let
        people ask them aloud (a grammar-only recogniser hears nothing else)."""
        return list(dict.fromkeys(q for e in self.entries if (q := normalise(e.question))))

    def questions(self) -> list[str]:
        """The questions as written, unique: the Whisper STT vocabulary shows them to the
        model so that a caller asking them is heard in the knowledge's own words."""
        return list(dict.fromkeys(q for e in self.entries if (q := e.question.strip())))

    def __len__(self) -> int:
        return len(self.entries)


def load_entries(path: str | Path) -> list[Entry]:
    """Parse and check a knowledge file; every problem is reported as `file:line:col`."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KnowledgeError([f"{where}: cannot read knowledge file: {exc.strerror or exc}"]) \
            from None
    except UnicodeDecodeError as exc:
        raise KnowledgeError([f"{where}: not UTF-8 text: {exc.reason}"]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise KnowledgeError([f"{at}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise KnowledgeError([f"{where}: invalid YAML: {exc}"]) from None
    except RecursionError:
        raise KnowledgeError([f"{where}: invalid YAML: the document nests too deeply"]) from None
    if root is None:
        return []
    if not isinstance(root, SequenceNode):
        raise KnowledgeError([f"{_at(where, root)}: a knowledge file is a list of entries "
                              f"(- id: ..., question: ..., answer: ...)"])
    problems: list[str] = []
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for item in root.value:
        entry = _entry(where, item, problems)
        if entry is None:
            continue
        if entry.id in seen:
            problems.append(f"{_at(where, item)}: duplicate id '{entry.id}' "
                            f"(first at {seen[entry.id]})")
            continue
        seen[entry.id] = _at(where, item)
        entries.append(entry)
    if problems:
        raise KnowledgeError(problems)
    return entries


def _entry(where: str, node: Node, problems: list[str]) -> Entry | None:
    if not isinstance(node, MappingNode):
        problems.append(f"{_at(where, node)}: each entry must be a mapping with id, question "
                        f"and/or keywords, and answer")
        return None
    fields: dict[str, Node] = {}
    before = len(problems)
    for key, value in node.value:
        name = key.value if isinstance(key, ScalarNode) else None
        if name not in _FIELDS:
            problems.append(f"{_at(where, key)}: unknown field {name!r}; "
                            f"expected one of {', '.join(_FIELDS)}")
        elif name in fields:
            problems.append(f"{_at(where, key)}: duplicate field '{name}'")
        else:
            fields[name] = value
    ident = _text(where, node, fields, "id", problems, required=True)
    answer = _text(where, node, fields, "answer", problems, required=True)
    question = _text(where, node, fields, "question", problems, required=False)
    keywords = _keywords(where, fields.get("keywords"), problems)
    if "question" not in fields and not keywords and len(problems) == before:
        problems.append(f"{_at(where, node)}: entry needs a question or keywords to be found by")
    if len(problems) > before:
        return None
    return Entry(ident, question, answer, keywords)


def _text(where: str, entry: Node, fields: dict[str, Node], name: str, problems: list[str],
          *, required: bool) -> str:
    node = fields.get(name)
    if node is None:
        if required:
            problems.append(f"{_at(where, entry)}: missing field '{name}'")
        return ""
    if not isinstance(node, ScalarNode) or not str(node.value).strip():
        problems.append(f"{_at(where, node)}: '{name}' must be non-empty text")
        return ""
    return str(node.value).strip()


def _keywords(where: str, node: Node | None, problems: list[str]) -> tuple[str, ...]:
    if node is None:
        return ()
    if not isinstance(node, SequenceNode) or not all(
            isinstance(k, ScalarNode) and str(k.value).strip() for k in node.value):
        problems.append(f"{_at(where, node)}: 'keywords' must be a list of words or phrases")
        return ()
    return tuple(str(k.value).strip() for k in node.value)


def _at(where: str, node: Node) -> str:
    return f"{where}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

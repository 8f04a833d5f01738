"""Safe YAML loading that keeps positions for every key and value.

PyYAML's safe loader turns `on:`/`off:`/`yes:`/`no:` into booleans and keeps
the last of two duplicate keys without a word. Charts need neither: here only
`true`/`false` are booleans, dates stay text, every mapping key is a string
(the text written in the file), duplicate keys are reported, and every key
and value gets its `line:col` in a `SourceMap` keyed by its path in the
document. Documents that nest too deeply, contain themselves through an
alias, or expand to a huge number of values are refused with E100 instead of
exhausting the stack or the memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from engine.chart.errors import ChartError, ChartErrors

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    col: int


@dataclass
class SourceMap:
    """Where each key and each value of a loaded document sits in its file."""

    path: str
    keys: dict[PathKey, Position] = field(default_factory=dict)
    values: dict[PathKey, Position] = field(default_factory=dict)

    def key(self, loc: PathKey) -> Position:
        """Position of the key at `loc`, or of the nearest enclosing thing that exists."""
        return self._nearest(loc, prefer_key=True)

    def value(self, loc: PathKey) -> Position:
        """Position of the value at `loc`, or of the nearest enclosing thing that exists."""
        return self._nearest(loc, prefer_key=False)

    def _nearest(self, loc: PathKey, *, prefer_key: bool) -> Position:
        probe = tuple(loc)
        while True:
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if probe in first:
                return first[probe]
            if probe in second:
                return second[probe]
            if not probe:
                return Position(1, 1)
            probe = probe[:-1]

    def error(self, loc: PathKey, code: str, message: str, *, at_key: bool = False,
              severity: str = "error") -> ChartError:
        pos = self.key(loc) if at_key else self.value(loc)
        return ChartError(self.path, pos.line, pos.col, code, message,
                          "warning" if severity == "warning" else "error")


@dataclass
class LoadedSource:
    """A parsed document, its source map, and problems found while loading."""

    data: Any
    source_map: SourceMap
    problems: list[ChartError]


MAX_DEPTH = 100
"""Deepest nesting of mappings and lists a document may have (a chart needs about 20)."""
MAX_VALUES = 200_000
"""Most values a document may expand to, aliases included (stops "billion laughs")."""


class _TooComplex(Exception):
    """A document the loader refuses to expand: too deep, recursive or too large."""

    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


def _chart_loader() -> type[yaml.SafeLoader]:
    """A safe loader where only true/false are booleans and dates stay strings."""

    class ChartLoader(yaml.SafeLoader):
        _depth = 0

        def compose_node(self, parent: Node | None, index: Any) -> Node | None:
            # PyYAML composes recursively: bound the depth before Python's stack is.
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                    raise ComposerError(None, None,
                                        f"nesting deeper than {MAX_DEPTH} levels", mark)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    resolvers: dict[Any, list[tuple[str, Any]]] = {}
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = [
            (tag, regexp)
            for tag, regexp in entries
            if not (tag == "tag:yaml.org,2002:bool" and first not in "tTfF")
            and tag != "tag:yaml.org,2002:timestamp"
        ]
        resolvers[first] = kept
    ChartLoader.yaml_implicit_resolvers = resolvers
    return ChartLoader


_Loader = _chart_loader()
_BOOL_WORDS = {"true", "false", "True", "False", "TRUE", "FALSE"}


def _pos(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a YAML node tree into plain Python objects, filling the source map.

    Mapping keys are always strings (their text in the file): every key in a
    chart is a name, a delay or a channel, so `600:` means the delay text
    "600", not the number. Aliases are expanded like PyYAML does, but a value
    that contains itself, nesting past `MAX_DEPTH` or a document expanding to
    more than `MAX_VALUES` values is refused.
    """

    def __init__(self, loader: yaml.SafeLoader, source_map: SourceMap) -> None:
        self.loader = loader
        self.map = source_map
        self.problems: list[ChartError] = []
        self._open: set[int] = set()
        self._explicit: dict[int, set[int]] = {}
        self._count = 0

    def build(self, node: Node, loc: PathKey) -> Any:
        self._count += 1
        if self._count > MAX_VALUES:
            raise _TooComplex(node, f"the document expands to more than {MAX_VALUES} values "
                              "(too many aliases?)")
        if id(node) in self._open:
            raise _TooComplex(node, "an alias refers to a value that contains it "
                              "(a recursive structure)")
        if len(self._open) >= MAX_DEPTH:
            raise _TooComplex(node, f"nesting deeper than {MAX_DEPTH} levels")
        self.map.values.setdefault(loc, _pos(node))
        if isinstance(node, ScalarNode):
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, bool) and node.value not in _BOOL_WORDS:
                return node.value  # yes/no/on/off stay plain words
            return value
        self._open.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
            assert isinstance(node, SequenceNode)
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: MappingNode, loc: PathKey) -> dict[str, Any]:
        # Keys a `<<` merge brings in may be overridden (that is what merges are
        # for); only keys written twice in the mapping itself are duplicates.
        # PyYAML's flatten_mapping rewrites the node in place, so remember which
        # keys were written here before it runs (an alias builds the node again).
        explicit = self._explicit.get(id(node))
        if explicit is None:
            explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
            self._explicit[id(node)] = explicit
        self.loader.flatten_mapping(node)
        chosen: dict[str, tuple[Node, Node]] = {}
        first_seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            key = self.build_key(key_node)
            if id(key_node) not in explicit:
                chosen[key] = (key_node, value_node)  # merged: later ones win, like PyYAML
                continue
            kpos = _pos(key_node)
            if key in first_seen:
                prev = first_seen[key]
                self.problems.append(ChartError(
                    self.map.path, kpos.line, kpos.col, "E101",
                    f"duplicate key '{key}' (first defined at line {prev.line}, column "
                    f"{prev.col}; YAML would silently keep only the last one)"))
                continue
            first_seen[key] = kpos
            chosen[key] = (key_node, value_node)
        out: dict[str, Any] = {}
        for key, (key_node, value_node) in chosen.items():
            child_loc = (*loc, key)
            self.map.keys[child_loc] = _pos(key_node)
            out[key] = self.build(value_node, child_loc)
        return out

    def build_key(self, node: Node) -> str:
        """A key as the text written in the file (`on`, `600`, `true` all stay words)."""
        if isinstance(node, ScalarNode):
            return str(node.value)
        return yaml.serialize(node).strip()


_LINE_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")   # YAML's line breaks, not only \n


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index (for errors YAML gives no mark for)."""
    index = max(0, min(index, len(text)))
    breaks = list(_LINE_BREAKS.finditer(text, 0, index))
    line_start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, index - line_start + 1


def _syntax_error(path: str, text: str, exc: yaml.YAMLError) -> ChartErrors:
    """One E100 at YAML's own position (its marks are 0-based, ours 1-based)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (exc.problem or "invalid YAML").strip()
        context = exc.context.strip() if exc.context else ""
        start = exc.context_mark
        if context and start is not None and mark is not None and start.line != mark.line:
            context += f" that started at line {start.line + 1}, column {start.column + 1}"
        message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    elif isinstance(exc, ReaderError):
        line, col = _line_col(text, exc.position)
        message = (f"YAML syntax error: unacceptable character #x{exc.character:04x}: "
                   f"{exc.reason}")
    else:
        line, col = 1, 1
        message = f"YAML syntax error: {exc}"
    return ChartErrors([ChartError(path, line, col, "E100", message)])


def load_yaml(text: str, path: str = "<string>") -> LoadedSource:
    """Parse `text`; raise `ChartErrors` (E100) on YAML syntax errors, keeping YAML's position."""
    source_map = SourceMap(path)
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader rejects unprintable characters up front
        raise _syntax_error(path, text, exc) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return LoadedSource(None, source_map, [])
        builder = _Builder(loader, source_map)
        data = builder.build(root, ())
    except yaml.YAMLError as exc:
        raise _syntax_error(path, text, exc) from None
    except _TooComplex as exc:
        pos = _pos(exc.node)
        raise ChartErrors([ChartError(path, pos.line, pos.col, "E100",
                                      f"YAML document refused: {exc.message}")]) from None
    except RecursionError:  # e.g. a merge key (<<) that merges its own mapping
        raise ChartErrors([ChartError(path, 1, 1, "E100", "YAML document refused: "
                                      "a recursive structure or nesting too deep")]) from None
    finally:
        loader.dispose()
    return LoadedSource(data, source_map, builder.problems)


def read_yaml_file(path: str | Path) -> LoadedSource:
    """Read and parse a file; an unreadable file is one E100-free `OSError` for the caller."""
    p = Path(path)
    return load_yaml(p.read_text(encoding="utf-8"), str(path))

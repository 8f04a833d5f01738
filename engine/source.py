"""Safe YAML loading that keeps positions for every key and value.

PyYAML's safe loader turns `on:`/`off:`/`yes:`/`no:` into booleans and keeps
the last of two duplicate keys without a word. Charts need neither: here only
`true`/`false` are booleans, duplicate keys are reported, and every key and
value gets its `line:col` in a `SourceMap` keyed by its path in the document.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.errors import ChartError, ChartErrors

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


def _bool_only_true_false() -> type[yaml.SafeLoader]:
    class ChartLoader(yaml.SafeLoader):
        pass

    resolvers: dict[Any, list[tuple[str, Any]]] = {}
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = [
            (tag, regexp)
            for tag, regexp in entries
            if not (tag == "tag:yaml.org,2002:bool" and first not in "tTfF")
        ]
        resolvers[first] = kept
    ChartLoader.yaml_implicit_resolvers = resolvers
    return ChartLoader


_Loader = _bool_only_true_false()
_BOOL_WORDS = {"true", "false", "True", "False", "TRUE", "FALSE"}


def _pos(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a YAML node tree into plain Python objects, filling the source map."""

    def __init__(self, loader: yaml.SafeLoader, source_map: SourceMap) -> None:
        self.loader = loader
        self.map = source_map
        self.problems: list[ChartError] = []

    def build(self, node: Node, loc: PathKey) -> Any:
        self.map.values.setdefault(loc, _pos(node))
        if isinstance(node, MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, bool) and node.value not in _BOOL_WORDS:
            return node.value  # yes/no/on/off stay plain words
        return value

    def _mapping(self, node: MappingNode, loc: PathKey) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        first_seen: dict[Hashable, Position] = {}
        for key_node, value_node in node.value:
            key = self.build_key(key_node)
            kpos = _pos(key_node)
            if key in first_seen:
                prev = first_seen[key]
                self.problems.append(ChartError(
                    self.map.path, kpos.line, kpos.col, "E101",
                    f"duplicate key '{key}' (first defined at line {prev.line}, "
                    "YAML would silently keep only the last one)"))
                continue
            first_seen[key] = kpos
            child_loc = (*loc, key)
            self.map.keys[child_loc] = kpos
            out[key] = self.build(value_node, child_loc)
        return out

    def build_key(self, node: Node) -> Hashable:
        if isinstance(node, ScalarNode):
            if node.tag == "tag:yaml.org,2002:bool" and node.value not in _BOOL_WORDS:
                return node.value
            value = self.loader.construct_object(node, deep=True)
            return str(value) if isinstance(value, bool) and node.value not in _BOOL_WORDS else (
                value if isinstance(value, Hashable) else str(value))
        return yaml.serialize(node).strip()


def load_yaml(text: str, path: str = "<string>") -> LoadedSource:
    """Parse `text`; raise `ChartErrors` (E100) on YAML syntax errors, keeping YAML's position."""
    source_map = SourceMap(path)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (exc.problem or "invalid YAML").strip()
        context = f" ({exc.context.strip()})" if exc.context else ""
        raise ChartErrors([ChartError(path, line, col, "E100",
                                      f"YAML syntax error: {problem}{context}")]) from None
    except yaml.YAMLError as exc:
        raise ChartErrors([ChartError(path, 1, 1, "E100", f"YAML syntax error: {exc}")]) from None
    finally:
        loader.dispose()
    if root is None:
        return LoadedSource(None, source_map, [])
    builder = _Builder(loader, source_map)
    try:
        data = builder.build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ChartErrors([ChartError(path, line, col, "E100",
                                      f"YAML syntax error: {(exc.problem or exc).__str__()}")]) from None
    return LoadedSource(data, source_map, builder.problems)


def read_yaml_file(path: str | Path) -> LoadedSource:
    """Read and parse a file; an unreadable file is one E100-free `OSError` for the caller."""
    p = Path(path)
    return load_yaml(p.read_text(encoding="utf-8"), str(path))

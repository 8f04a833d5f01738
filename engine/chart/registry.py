"""Named guards, effects and activities: the only Python a chart refers to.

A chart names behaviour; this registry maps each name to a callable. The
validator checks every name in a chart against the registry the chart will
run with, so a typo is a load-time error, not a surprise mid-call.

Signatures (the runtime calls them exactly so):

- guard:    ``guard(event: GuardInput) -> bool`` — pure and fast, no I/O.
- effect:   ``async effect(ctx: EffectContext) -> None`` — short, ordered.
- activity: ``async activity(ctx: ActivityContext) -> None`` — long work
  owned by a state; it is cancelled when the state is left and reports
  back by posting events through its context.

A guard may also declare *examples*: payloads that make it true and false
(``examples={True: {"text": "hi"}, False: {"text": ""}}``). Code cannot be
inverted, so `turnchart paths` uses them to choose inputs that take each
guard outcome (docs/paths.md); guards without examples get their outcome forced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from engine.runtime.context import ActivityContext, EffectContext

Kind = Literal["guard", "effect", "activity"]


@dataclass(frozen=True, slots=True)
class GuardInput:
    """What a guard may look at: the event and the session's context data."""

    event: str
    payload: Mapping[str, Any]
    context: Mapping[str, Any] = field(default_factory=dict)   # the chart's data (chart/data.py)
    args: Mapping[str, Any] = field(default_factory=dict)      # the chart's arguments to this guard


GuardFn = Callable[[GuardInput], bool]
EffectFn = Callable[["EffectContext"], Awaitable[None]]
ActivityFn = Callable[["ActivityContext"], Awaitable[None]]
GuardExamples = Mapping[bool, tuple[Mapping[str, Any], ...]]
"""Outcome → payloads for which the guard gives that outcome."""
ExamplesArg = Mapping[bool, Mapping[str, Any] | Sequence[Mapping[str, Any]]]
"""What `guard(examples=...)` accepts: one payload or a list of them per outcome."""
_NO_EXAMPLES: GuardExamples = MappingProxyType({})
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    kind: Kind
    fn: Callable[..., Any]
    doc: str
    examples: GuardExamples = field(default_factory=lambda: _NO_EXAMPLES)
    params: Mapping[str, str] = field(default_factory=lambda: _NO_PARAMS)
    """A guard's parameter name → kind (engine/chart/data.py PARAM_KINDS); the chart must
    pass exactly these as `args`, each checked by the validator."""


class Registry:
    """A set of named guards, effects and activities; copy before you extend a shared one."""

    def __init__(self) -> None:
        self._items: dict[Kind, dict[str, Registered]] = {"guard": {}, "effect": {}, "activity": {}}
        from engine.chart.data import register_builtin_guards
        register_builtin_guards(self)   # field_equals & co. (typed chart data)

    def _add(self, kind: Kind, name: str, fn: Callable[..., Any]) -> None:
        if not name.isidentifier():
            raise ValueError(f"{kind} name {name!r} is not an identifier")
        if name in self._items[kind]:
            raise ValueError(f"{kind} {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        self._items[kind][name] = Registered(name, kind, fn, doc)

    def guard(self, name: str | None = None, *, examples: ExamplesArg | None = None,
              params: Mapping[str, str] | None = None) -> Callable[[GuardFn], GuardFn]:
        """Decorator: register a guard under `name` (default: the function's name),
        optionally with example payloads for each outcome (see the module doc) and
        the parameters it takes from the chart (`GuardInput.args`)."""
        def deco(fn: GuardFn) -> GuardFn:
            guard_name = name or fn.__name__
            self._add("guard", guard_name, fn)
            if params:
                item = self._items["guard"][guard_name]
                self._items["guard"][guard_name] = Registered(
                    item.name, item.kind, item.fn, item.doc, item.examples,
                    MappingProxyType(dict(params)))
            if examples is not None:
                self.add_guard_examples(guard_name, examples)
            return fn
        return deco

    def add_guard_examples(self, name: str, examples: ExamplesArg) -> None:
        """Declare payloads that make a registered guard true / false (added to any it has)."""
        item = self.get("guard", name)
        merged = {outcome: list(payloads) for outcome, payloads in item.examples.items()}
        for outcome, given in examples.items():
            if not isinstance(outcome, bool):
                raise ValueError(f"guard {name!r} examples: key {outcome!r} must be True or False")
            payloads = [given] if isinstance(given, Mapping) else list(given)
            for payload in payloads:
                if not isinstance(payload, Mapping) or not all(isinstance(k, str)
                                                               for k in payload):
                    raise ValueError(f"guard {name!r} examples[{outcome}]: {payload!r} is not "
                                     "a payload mapping with field names as keys")
            merged.setdefault(outcome, []).extend(MappingProxyType(dict(p)) for p in payloads)
        frozen = MappingProxyType({k: tuple(v) for k, v in merged.items()})
        self._items["guard"][name] = Registered(item.name, item.kind, item.fn, item.doc, frozen,
                                                item.params)

    def guard_examples(self, name: str) -> GuardExamples:
        """The example payloads of a guard by outcome (empty when it declared none)."""
        return self.get("guard", name).examples

    def with_guards(self, replacements: Mapping[str, GuardFn]) -> Registry:
        """A copy whose named guards call other functions (examples kept): path
        generation wraps guards this way to force an outcome."""
        other = self.copy()
        for name, fn in replacements.items():
            item = self.get("guard", name)
            other._items["guard"][name] = Registered(item.name, item.kind, fn, item.doc,
                                                     item.examples, item.params)
        return other

    def effect(self, name: str | None = None) -> Callable[[EffectFn], EffectFn]:
        """Decorator: register an async effect."""
        def deco(fn: EffectFn) -> EffectFn:
            self._add("effect", name or fn.__name__, fn)
            return fn
        return deco

    def activity(self, name: str | None = None) -> Callable[[ActivityFn], ActivityFn]:
        """Decorator: register an async activity."""
        def deco(fn: ActivityFn) -> ActivityFn:
            self._add("activity", name or fn.__name__, fn)
            return fn
        return deco

    def names(self, kind: Kind) -> frozenset[str]:
        return frozenset(self._items[kind])

    def get(self, kind: Kind, name: str) -> Registered:
        try:
            return self._items[kind][name]
        except KeyError:
            raise KeyError(f"no {kind} named {name!r} is registered") from None

    def guard_fn(self, name: str) -> GuardFn:
        fn: GuardFn = self.get("guard", name).fn
        return fn

    def effect_fn(self, name: str) -> EffectFn:
        fn: EffectFn = self.get("effect", name).fn
        return fn

    def activity_fn(self, name: str) -> ActivityFn:
        fn: ActivityFn = self.get("activity", name).fn
        return fn

    def __iter__(self) -> Iterator[Registered]:
        for kind in ("guard", "effect", "activity"):
            yield from self._items[kind].values()

    def copy(self) -> Registry:
        other = Registry()
        for kind, items in self._items.items():
            other._items[kind] = dict(items)
        return other

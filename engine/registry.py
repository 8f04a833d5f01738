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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from engine.context import ActivityContext, EffectContext

Kind = Literal["guard", "effect", "activity"]


@dataclass(frozen=True, slots=True)
class GuardInput:
    """What a guard may look at: the event and the session's context data."""

    event: str
    payload: Mapping[str, Any]
    context: Mapping[str, Any] = field(default_factory=dict)


GuardFn = Callable[[GuardInput], bool]
EffectFn = Callable[["EffectContext"], Awaitable[None]]
ActivityFn = Callable[["ActivityContext"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    kind: Kind
    fn: Callable[..., Any]
    doc: str


class Registry:
    """A set of named guards, effects and activities; copy before you extend a shared one."""

    def __init__(self) -> None:
        self._items: dict[Kind, dict[str, Registered]] = {"guard": {}, "effect": {}, "activity": {}}

    def _add(self, kind: Kind, name: str, fn: Callable[..., Any]) -> None:
        if not name.isidentifier():
            raise ValueError(f"{kind} name {name!r} is not an identifier")
        if name in self._items[kind]:
            raise ValueError(f"{kind} {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        self._items[kind][name] = Registered(name, kind, fn, doc)

    def guard(self, name: str | None = None) -> Callable[[GuardFn], GuardFn]:
        """Decorator: register a guard under `name` (default: the function's name)."""
        def deco(fn: GuardFn) -> GuardFn:
            self._add("guard", name or fn.__name__, fn)
            return fn
        return deco

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

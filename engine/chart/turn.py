"""Per-state turn policy: how a state takes the caller's turn (chart key `turn:`).

A chart says, per state and inherited from parents like a contract, how the audio
adapter decides that the caller has finished (`end`: plain silence, a learned
end-of-turn model asked after a short silence, or that model together with the words
heard so far), how long a pause may last before the
turn ends (`patience_ms`), and how much speech over the assistant is a barge-in
(`barge_in.speaking_ms` while answer audio streams, `barge_in.thinking_ms` while the
answer is being prepared). Every key is optional: an unset key means the audio
adapter's own setting (docs/chart-format.md lists the defaults). A child overrides
its parent key by key.

Pure data: the engine only carries the policy; the audio adapter enforces it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

EndOfTurn = Literal["silence", "smart", "hybrid"]
END_MODES: tuple[str, ...] = ("silence", "smart", "hybrid")
MAX_TURN_MS = 10_000
"""The longest duration a turn policy may name (patience or barge-in speech), in ms."""


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    """A state's effective turn policy after inheritance; None = the adapter's default."""

    end: EndOfTurn | None = None
    patience_ms: int | None = None
    barge_in_speaking_ms: int | None = None
    barge_in_thinking_ms: int | None = None

    @property
    def empty(self) -> bool:
        return self == NO_POLICY

    def as_dict(self) -> dict[str, Any]:
        """The keys that are set, in the chart's own shape (for JSON, /inspect and diagrams)."""
        out: dict[str, Any] = {}
        if self.end is not None:
            out["end"] = self.end
        if self.patience_ms is not None:
            out["patience_ms"] = self.patience_ms
        barge: dict[str, int] = {}
        if self.barge_in_speaking_ms is not None:
            barge["speaking_ms"] = self.barge_in_speaking_ms
        if self.barge_in_thinking_ms is not None:
            barge["thinking_ms"] = self.barge_in_thinking_ms
        if barge:
            out["barge_in"] = barge
        return out

    def text(self, sep: str = " · ") -> str:
        """`end smart · patience 700 ms · barge-in 250 ms speaking, 400 ms thinking`
        (only what is set; '' when nothing is)."""
        parts: list[str] = []
        if self.end is not None:
            parts.append(f"end {self.end}")
        if self.patience_ms is not None:
            parts.append(f"patience {self.patience_ms} ms")
        barge = [f"{ms} ms {when}" for ms, when in ((self.barge_in_speaking_ms, "speaking"),
                                                    (self.barge_in_thinking_ms, "thinking"))
                 if ms is not None]
        if barge:
            parts.append("barge-in " + ", ".join(barge))
        return sep.join(parts)


NO_POLICY = TurnPolicy()


def merge(layers: Iterable[Any]) -> TurnPolicy:
    """Fold `turn:` specs (engine.chart.spec.TurnSpec or None), root first, into one policy."""
    end: EndOfTurn | None = None
    patience: int | None = None
    speaking: int | None = None
    thinking: int | None = None
    for layer in layers:
        if layer is None:
            continue
        end = layer.end if layer.end is not None else end
        patience = layer.patience_ms if layer.patience_ms is not None else patience
        barge = layer.barge_in
        if barge is not None:
            speaking = barge.speaking_ms if barge.speaking_ms is not None else speaking
            thinking = barge.thinking_ms if barge.thinking_ms is not None else thinking
    return TurnPolicy(end, patience, speaking, thinking)

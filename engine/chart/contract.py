"""A state's contract as a typed value: its value for each of the chart's channels.

Why its own module: the compiler gives every state one and the trace carries it on
`contract_applied` lines; the chart pipeline must not import the runtime to name it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Contract(Mapping[str, str]):
    """A state's value for each channel of the chart's `contracts` (after
    inheritance), in the chart's order. Channels are the chart's own; the two
    the audio adapters act on have properties (None: the chart has no such channel)."""

    channels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Contract:
        return cls(tuple((str(k), str(v)) for k, v in values.items()))

    @property
    def microphone(self) -> str | None:
        return self.get("microphone")

    @property
    def playback(self) -> str | None:
        return self.get("playback")

    def __getitem__(self, channel: str) -> str:
        for name, value in self.channels:
            if name == channel:
                return value
        raise KeyError(channel)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.channels)

    def __len__(self) -> int:
        return len(self.channels)

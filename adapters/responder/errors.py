"""The responder's failures, each with a message a person can act on.

The engine's `respond` activity turns any exception into the chart's `error`
event and puts `str(exc)` in its payload, so these messages are what an
operator reads: they name the service and the cause, never a secret.
"""

from __future__ import annotations

from collections.abc import Sequence


class ResponderError(Exception):
    """An answer could not be produced (timeout, unreachable LLM, bad stream...)."""


class ResponderConfigError(ResponderError):
    """Responder settings that cannot be used; raised at start-up, not mid-turn."""


class KnowledgeError(Exception):
    """A knowledge file that cannot be used; `problems` are `file:line:col: why` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))

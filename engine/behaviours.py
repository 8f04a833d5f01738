"""The default registry: the guards, effects and activities the shipped chart names."""

from __future__ import annotations

from engine.registry import GuardInput, Registry


def has_text(event: GuardInput) -> bool:
    """True when the event's payload has non-blank `text`."""
    text = event.payload.get("text")
    return isinstance(text, str) and bool(text.strip())


def has_final_text(event: GuardInput) -> bool:
    """True for a final transcript with non-blank text (partials never start a turn)."""
    return has_text(event) and event.payload.get("is_final", True) is True


def default_registry() -> Registry:
    reg = Registry()
    reg.guard("has_text")(has_text)
    reg.guard("has_final_text")(has_final_text)
    _declare(reg)
    return reg


def _declare(reg: Registry) -> None:
    """Names whose behaviour arrives with the session runtime (Step 2)."""
    async def pending(ctx: object) -> None:
        raise NotImplementedError("behaviour arrives with the session runtime")

    for name in ("cancel_previous_filler", "play_immediate_filler", "cancel_filler", "cancel_tts"):
        reg.effect(name)(pending)
    for name in ("respond", "speak"):
        reg.activity(name)(pending)

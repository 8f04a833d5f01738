"""The default registry: the guards, effects and activities the shipped chart names.

Each behaviour talks to the world only through the ports in `ctx.ports`, so
the same code runs live (FastRTC, offline TTS) and in simulation (fakes).
"""

from __future__ import annotations

from engine.chart.registry import GuardInput, Registry
from engine.runtime.context import ActivityContext, EffectContext
from engine.runtime.dialogue import Dialogue, ToolCall, ToolResult, check_call
from engine.runtime.ports import DialogueResponder
from engine.runtime.trace import EventInvalid, PlaybackCleared, ResponderFailed, StateTimeout


def has_text(event: GuardInput) -> bool:
    """True when the event's payload has non-blank `text`."""
    text = event.payload.get("text")
    return isinstance(text, str) and bool(text.strip())


def has_final_text(event: GuardInput) -> bool:
    """True for a final transcript with non-blank text (partials never start a turn)."""
    return has_text(event) and event.payload.get("is_final", True) is True


async def cancel_tts(ctx: EffectContext) -> None:
    """Silence the answer: drop every queued audio chunk of this session."""
    dropped = await ctx.ports.playback.clear(ctx.session_id)
    since = ctx.since_event_ms("barge_in")
    ctx.emit(PlaybackCleared(ctx.session_id, ctx.clock.now_ms(), ctx.clock.wall(),
                             state=ctx.state, ms_since_barge_in=since, dropped_chunks=dropped))


async def cancel_filler(ctx: EffectContext) -> None:
    """Stop a filler clip that may still be playing."""
    await ctx.ports.filler.cancel(ctx.session_id)


async def cancel_previous_filler(ctx: EffectContext) -> None:
    """On a new turn, make sure no filler of the previous turn is still playing."""
    await ctx.ports.filler.cancel(ctx.session_id)


async def play_immediate_filler(ctx: EffectContext) -> None:
    """A short "hmm" while the answer is slow (the filler channel, not the answer's playback)."""
    await ctx.ports.filler.play(ctx.session_id)


async def report_timeout(ctx: EffectContext) -> None:
    """A state gave up waiting on work it started (its `after` deadline fired): say
    so at WARNING, so that a hung responder or speaker is never a silent stall."""
    ctx.emit(StateTimeout(ctx.session_id, ctx.clock.now_ms(), ctx.clock.wall(),
                          state=ctx.state, event=ctx.event))


MAX_TOOL_ROUNDS = 3
"""Requests one `respond` makes in a dialogue state: the caller's words, then once more
after each batch of tool calls (with their results and the state they led to)."""


async def respond(ctx: ActivityContext) -> None:
    """Ask the responder about the user's words; post `response_ready` or `error`.

    In a dialogue state (a `prompt:`, issue 16 §4) a responder that can converse
    gets the prompt and tools; each tool call it makes is checked like a wire event
    and posted as that chart event (a bad one is an `event_invalid` line and goes
    back to the responder), then the responder is asked again in the state the
    calls led to, and everything it said is the answer."""
    text = str(ctx.payload.get("text", ""))
    responder = ctx.ports.responder
    dialogue = ctx.dialogue() if ctx.dialogue is not None else None
    try:
        if dialogue is not None and isinstance(responder, DialogueResponder):
            answer = await _converse(ctx, responder, text, dialogue)
        else:
            answer = "".join([piece async for piece in responder.answer(text, ctx.session_id)])
    except Exception as exc:  # the responder's failure is the chart's business
        message = f"responder failed: {type(exc).__name__}: {exc}"
        ctx.emit(ResponderFailed(ctx.session_id, ctx.clock.now_ms(), ctx.clock.wall(),
                                 activity=ctx.activity, state=ctx.state, error=message))
        ctx.post("error", {"message": message})
        return
    ctx.post("response_ready", {"text": answer.strip()})


async def _converse(ctx: ActivityContext, responder: DialogueResponder, text: str,
                    dialogue: Dialogue) -> str:
    said: list[str] = []
    for _ in range(MAX_TOOL_ROUNDS):
        calls: list[ToolCall] = []
        async for piece in responder.converse(text, ctx.session_id, dialogue):
            if isinstance(piece, ToolCall):
                calls.append(piece)
            else:
                said.append(piece)
        if not calls:
            break
        results = [_call_tool(ctx, call, dialogue) for call in calls]
        if any(r.ok for r in results) and ctx.settle is not None and ctx.dialogue is not None:
            await ctx.settle()          # the calls are handled: ask in the state they led to
            dialogue = ctx.dialogue() or dialogue
        dialogue = dialogue.with_results(results)
    return " ".join(p.strip() for p in said if p.strip())


def _call_tool(ctx: ActivityContext, call: ToolCall, dialogue: Dialogue) -> ToolResult:
    """Post one tool call as its chart event, or log why it cannot be (`event_invalid`)."""
    problem = check_call(call, dialogue, ctx.events or {}, ctx.session_id)
    args = dict(call.arguments)
    if problem is not None:
        error = f"{problem.field}: {problem.error}"
        ctx.emit(EventInvalid(ctx.session_id, ctx.clock.now_ms(), ctx.clock.wall(),
                              error=error, field=problem.field, raw=problem.raw))
        ctx.log("INFO", "tool_called", f"🛠️ {call.name} refused: {error}",
                {"tool": call.name, "arguments": args, "ok": False, "error": error,
                 "state": dialogue.state})
        return ToolResult(call, False, error)
    ctx.log("INFO", "tool_called", f"🛠️ {call.name}({args})",
            {"tool": call.name, "arguments": args, "ok": True, "state": dialogue.state})
    ctx.post(call.name, args)
    return ToolResult(call, True, f"{call.name} done")


async def speak(ctx: ActivityContext) -> None:
    """Stream the answer's audio while playback is `streaming`; post `playback_done`."""
    text = str(ctx.payload.get("text", ""))
    await ctx.ports.playback.start(ctx.session_id)
    audio_ms = 0.0
    async for chunk in ctx.ports.speech.synthesize(text):
        if not await ctx.emit_audio(chunk):
            break
        audio_ms += chunk.duration_ms
    await ctx.ports.playback.drain(ctx.session_id)
    ctx.post("playback_done", {"duration_ms": round(audio_ms, 3)})


def default_registry() -> Registry:
    """A fresh registry with the shipped behaviours; extend it with your own."""
    reg = Registry()
    # Examples let `turnchart paths` take both outcomes of each guard (docs/paths.md).
    reg.guard("has_text", examples={True: {"text": "hello"},
                                    False: [{"text": ""}, {"text": "   "}]})(has_text)
    reg.guard("has_final_text", examples={
        True: {"text": "hello", "is_final": True},
        False: [{"text": "", "is_final": True}, {"text": "hello", "is_final": False}]},
    )(has_final_text)
    for effect in (cancel_tts, cancel_filler, cancel_previous_filler, play_immediate_filler,
                   report_timeout):
        reg.effect()(effect)
    reg.activity()(respond)
    reg.activity()(speak)
    return reg

"""The phone: Twilio Media Streams over FastRTC's WebSocket handler, same chart.

Twilio answers a call with the TwiML of `POST /telephone/incoming`, which
tells it to open a WebSocket to `/telephone/handler` and stream the call's
audio there (8 kHz mono μ-law, base64, 20 ms per `media` message). Messages
in, as Twilio's Media Streams documentation gives them: `connected`,
`start` (with `streamSid` and `mediaFormat`), `media`, `mark` (a mark we sent
has been played), `dtmf`, `stop`. Messages out: `media` (answer audio, μ-law
8 kHz), `mark` (tell us when the phone has played up to here), `clear` (drop
every buffered frame now).

FastRTC's `WebSocketHandler` in phone mode does the transport (μ-law ⇄ PCM,
8 kHz → 16 kHz in, the output rate → 8 kHz out), exactly as its own
`Stream.telephone_handler` mounts it; the handler is our `TurnStreamHandler`,
so every frame goes where the session's contract says, as on `/webrtc` and
`/websocket`. Two things are added for the phone:

- a barge-in (or the chart stopping playback mid-answer) sends `clear` with
  the stream's `streamSid`, so the phone stops playing what Twilio has
  buffered at once, not when its buffer runs dry;
- when the answer audio stops, a `mark` follows it; Twilio echoes it once the
  phone has played everything before it, logged as `phone_mark`;
- a key press (`dtmf`) is logged as `phone_dtmf` and, when the running chart
  declares a `dtmf` event, posted to the session as that event (with `digit`
  when its payload has it), so a chart can take "press 1" as well as words.

Bad messages are logged (WARNING `phone_bad_message`) and skipped, never
answered: Twilio reads only media, mark and clear. A `start` whose
`mediaFormat` is not 8 kHz mono μ-law closes the socket (1003).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import re
import time
from collections.abc import Callable
from typing import Any, Protocol
from xml.sax.saxutils import quoteattr

from fastrtc.websocket import WebSocketHandler
from starlette.websockets import WebSocket, WebSocketDisconnect

from adapters.fastrtc.handler import TurnStreamHandler, VoiceBackend
from adapters.fastrtc.output import OutputStream
from adapters.fastrtc.transport import CONNECTION_ID
from engine.chart.compiler import CompiledChart
from engine.runtime.logs import EventLog

NO_SESSION = "-"
DTMF_EVENT = "dtmf"            # the chart event a key press becomes, when declared
PHONE_EVENTS = frozenset({"connected", "start", "media", "mark", "dtmf", "stop"})
PHONE_RATE = 8_000
UNSUPPORTED_DATA = 1003
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$")


def twiml(host: str, public_url: str | None = None) -> str:
    """TwiML that connects the call to this server's Media Streams WebSocket.

    On `public_url` (https://h → wss://h) when given (a proxy in front), else on the
    request's Host: `wss://` as Twilio requires; `ws://` only for a loopback host (tests,
    a local Twilio-protocol client). Raises ValueError for a Host header that is not
    `host[:port]`."""
    if public_url:
        base = public_url.rstrip("/")
        url = ("wss" if base.startswith("https") else "ws") + base[base.index("://"):]
        url += "/telephone/handler"
    else:
        if not _HOST.match(host):
            raise ValueError(f"Host header {host[:80]!r} is not host[:port]")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        scheme = "ws" if _is_loopback(name.strip("[]")) else "wss"
        url = f"{scheme}://{host}/telephone/handler"
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            f"<Response><Connect><Stream url={quoteattr(url)} /></Connect></Response>")


def _is_loopback(name: str) -> bool:
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class PhoneLink:
    """Our side of one Media Streams socket: what went out, `clear` and `mark`."""

    def __init__(self, websocket: WebSocket, log: EventLog) -> None:
        self.websocket = websocket
        self.log = log
        self.stream_sid: str | None = None
        self.media_out = 0                 # media messages sent
        self.media_since_clear = 0
        self.media_since_mark = 0
        self.clears = 0
        self.marks_sent: dict[str, float] = {}   # name → monotonic time sent
        self.fastrtc_queue: asyncio.Queue[Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    @property
    def session_id(self) -> str:
        return self.stream_sid or NO_SESSION

    async def send_json(self, message: Any, mode: str = "text") -> None:
        """FastRTC's emit loop sends answer audio through here (counted)."""
        if isinstance(message, dict) and message.get("event") == "media":
            self.media_out += 1
            self.media_since_clear += 1
            self.media_since_mark += 1
        await self.websocket.send_json(message, mode=mode)

    def _send_soon(self, message: dict[str, Any]) -> None:
        if self.closed or self.stream_sid is None:
            return

        async def send() -> None:
            try:
                await self.websocket.send_json(message)
            except Exception:  # the phone hung up meanwhile: nothing to tell it
                self.closed = True

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def clear(self) -> None:
        """The output was cleared (barge-in, stop): the phone drops its buffer too."""
        if self.media_since_clear == 0:
            return  # nothing has gone out since the last clear: nothing to drop
        self.media_since_clear = 0
        self.media_since_mark = 0
        self.clears += 1
        self._send_soon({"event": "clear", "streamSid": self.stream_sid})
        self.log.emit("INFO", self.session_id, "phone_clear",
                      "📵 clear sent: the phone drops the answer audio it buffered",
                      {"clears": self.clears, "media_out": self.media_out})

    def idle(self) -> None:
        """The answer audio stopped: a mark after it says when the phone played it."""
        if self.media_since_mark == 0 or (self.fastrtc_queue is not None
                                          and not self.fastrtc_queue.empty()):
            return
        self.media_since_mark = 0
        name = f"answer-{len(self.marks_sent) + 1}"
        self.marks_sent[name] = time.monotonic()
        self._send_soon({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def mark_played(self, name: str) -> None:
        sent = self.marks_sent.pop(name, None)
        waited = None if sent is None else round((time.monotonic() - sent) * 1000.0, 1)
        self.log.emit("INFO", self.session_id, "phone_mark",
                      f"🔈 the phone played up to mark {name!r}",
                      {"mark": name, "ms_after_sent": waited, "known": sent is not None})


class PhoneOutput(OutputStream):
    """The connection's output; a clear that drops answer audio (the chart stopped
    playback mid-answer) is passed on to the phone. A clear after the answer has
    played out drops nothing and sends nothing: it must not cut the phone's tail."""

    def __init__(self, rate: int, on_cut: Callable[[], None]) -> None:
        super().__init__(rate)
        self.on_cut = on_cut

    def clear(self, *, filler_only: bool = False) -> int:
        dropped = super().clear(filler_only=filler_only)
        if dropped and not filler_only:
            self.on_cut()
        return dropped

    def hold(self) -> int:
        """Paused over a possible backchannel: the phone drops what it buffered too (it is
        taken back here and sent again if the answer resumes)."""
        taken = super().hold()
        if taken:
            self.on_cut()
        return taken


class PhoneBackend(VoiceBackend, Protocol):
    """The voice service as the phone sees it: it also knows the running chart."""

    chart: CompiledChart


class PhoneStreamHandler(TurnStreamHandler):
    """`TurnStreamHandler` for a phone connection: a barge-in reaches the phone."""

    def __init__(self, service: PhoneBackend, *, output_rate: int = 24_000) -> None:
        super().__init__(service, output_rate=output_rate)
        self.phone_service = service
        self.phone_mode = True
        self.link: PhoneLink | None = None
        self.output = PhoneOutput(output_rate, self._clear_phone)

    def copy(self) -> PhoneStreamHandler:
        return PhoneStreamHandler(self.phone_service, output_rate=self.output_sample_rate)

    def _clear_phone(self) -> None:
        if self.link is not None:
            self.link.clear()

    def barge_in(self, reason: str) -> None:
        super().barge_in(reason)
        self._clear_phone()     # even when nothing was queued here: the phone buffers too

    def key_pressed(self, digit: str) -> None:
        """A DTMF key: the chart's `dtmf` event, if the running chart has one."""
        spec = self.phone_service.chart.events.get(DTMF_EVENT)
        if spec is None or self.session_id is None:
            return
        payload = {"digit": digit} if "digit" in spec.payload else {}
        self.service.post(self.session_id, DTMF_EVENT, payload)

    async def emit(self) -> Any:
        frame = await super().emit()
        if frame is None and self.link is not None:
            self.link.idle()
        return frame


class TwilioWebSocket:
    """Wraps the socket for FastRTC's `WebSocketHandler`: Media Streams messages
    are checked, `connected`/`mark`/`dtmf` are handled here, `start`, `media`
    and `stop` go on to FastRTC."""

    def __init__(self, websocket: WebSocket, link: PhoneLink, log: EventLog,
                 on_key: Callable[[str], None] = lambda digit: None) -> None:
        self._ws = websocket
        self.link = link
        self.log = log
        self.on_key = on_key
        self.protocol: str | None = None
        self.started = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def send_json(self, message: Any, mode: str = "text") -> None:
        await self.link.send_json(message, mode)

    def _bad(self, problem: str) -> None:
        self.log.emit("WARNING", self.link.session_id, "phone_bad_message",
                      f"📞 skipped a Media Streams message: {problem}", {"problem": problem})

    async def receive_json(self) -> dict[str, Any]:
        while True:
            received = await self._ws.receive()
            if received["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(received.get("code", 1000), received.get("reason"))
            text = received.get("text")
            if text is None:
                self._bad("binary message (Media Streams messages are JSON text)")
                continue
            try:
                message = json.loads(text)
            except (ValueError, RecursionError) as exc:
                self._bad(f"not JSON: {str(exc)[:120]}")
                continue
            problem = self._problem(message)
            if problem:
                self._bad(problem)
                continue
            event = message["event"]
            if event == "connected":
                self.protocol = str(message.get("protocol", ""))
                continue
            if event == "mark":
                self.link.mark_played(str(message["mark"]["name"]))
                continue
            if event == "dtmf":
                digit = str(message.get("dtmf", {}).get("digit", ""))[:4]
                self.log.emit("INFO", self.link.session_id, "phone_dtmf",
                              f"☎️ key {digit!r} pressed", {"digit": digit})
                self.on_key(digit)
                continue
            if event == "start":
                fmt = message.get("start", {}).get("mediaFormat")
                unsupported = _unsupported_format(fmt)
                if unsupported:
                    self.log.emit("WARNING", NO_SESSION, "phone_bad_message",
                                  f"📞 call refused: {unsupported}", {"problem": unsupported})
                    await self._ws.close(UNSUPPORTED_DATA, unsupported[:120])
                    raise WebSocketDisconnect(UNSUPPORTED_DATA, unsupported)
                self.started = True
                self.link.stream_sid = message["streamSid"]
            return dict(message)

    def _problem(self, message: Any) -> str | None:
        if not isinstance(message, dict):
            return "a message must be a JSON object"
        event = message.get("event")
        if event not in PHONE_EVENTS:
            return f"unknown event {str(event)[:40]!r}: Media Streams sends " \
                   f"{', '.join(sorted(PHONE_EVENTS))}"
        if event == "start":
            if self.started:
                return "a second start on one stream"
            sid = message.get("streamSid")
            if sid is None and isinstance(message.get("start"), dict):
                sid = message["start"].get("streamSid")
                message["streamSid"] = sid
            if not isinstance(sid, str) or not CONNECTION_ID.match(sid):
                return "start needs streamSid: 1-128 letters, digits or _ . : -"
            if not isinstance(message.get("start", {}), dict):
                return "start.start must be an object"
        if event == "media":
            if not self.started:
                return "media before start"
            media = message.get("media")
            if not isinstance(media, dict) or not isinstance(payload := media.get("payload"), str):
                return "media needs media.payload: base64 μ-law audio"
            if media.get("track", "inbound") != "inbound":
                return f"media.track {str(media.get('track'))[:20]!r}: only inbound is heard"
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return "media.payload is not valid base64"
        if event == "mark":
            mark = message.get("mark")
            if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
                return "mark needs mark.name (a string)"
        if event == "dtmf" and not isinstance(message.get("dtmf", {}), dict):
            return "dtmf.dtmf must be an object"
        return None


def _unsupported_format(fmt: Any) -> str | None:
    """None when `mediaFormat` is absent or 8 kHz mono μ-law, else why not."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return "start.mediaFormat must be an object"
    encoding, rate, channels = fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels", 1)
    if encoding != "audio/x-mulaw" or rate != PHONE_RATE or channels != 1:
        return (f"mediaFormat {encoding!r} {rate!r} Hz × {channels!r}: only audio/x-mulaw, "
                f"{PHONE_RATE} Hz, 1 channel is spoken")
    return None


async def serve_telephone(websocket: WebSocket, handler: PhoneStreamHandler,
                          log: EventLog) -> None:
    """One phone call: FastRTC's handler in phone mode over a checked Media Streams
    socket; the session ends (client_disconnected) when the socket does."""
    link = PhoneLink(websocket, log)
    handler.link = link
    wrapped = TwilioWebSocket(websocket, link, log, handler.key_pressed)

    async def set_handler(stream_id: str, ws_handler: WebSocketHandler) -> None:
        return None

    ws = WebSocketHandler(handler, set_handler, lambda stream_id: None,
                          lambda stream_id: lambda outputs: None)
    ws.start_up_task = None  # type: ignore[assignment]  # read on close, set only by `start`
    link.fastrtc_queue = ws.queue
    try:
        await ws.handle_websocket(wrapped)  # type: ignore[arg-type]
    except WebSocketDisconnect:
        pass
    finally:
        link.closed = True
        await handler.detach()

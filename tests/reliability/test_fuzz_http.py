"""Fuzzing the HTTP side. Every route of `create_app` (found by walking the app,
so a route added later is fuzzed too), plus paths no route has, gets wrong
methods, odd path parameters, bad query strings, bad, deep, binary and huge
bodies (whole or chunked), wrong or lying `Content-Length` and `Content-Type`
headers, foreign `Origin`s, from many client addresses, through the ASGI interface the way a
server calls it (live voice running, with the test speech stand-ins). The
WebSocket transport gets junk messages, text and binary.

Never a 500, never an exception out of the app, never a traceback in the
logs; every 4xx is JSON with an `error` that says what was wrong (the input
limits' 413 and 429 included); a WebSocket connection answers each junk
message with an error message and still works afterwards.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import anyio
import anyio.from_thread
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Message

from adapters.config import LimitsSettings, ServerSettings, Settings
from adapters.server.app import create_app
from engine.runtime.logs import FanOutSink, JsonLinesSink, ListSink
from tests.reliability import FUZZ_BUDGETS, fuzz_settings
from tests.support.voice_fakes import fake_voice_factory
from tests.support.waiting import wait_for

TOKEN = "fuzz-admin-token-0123456789"
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"]
ALLOWED_5XX = {501, 503}   # "render unavailable", "voice not running": JSON, on purpose


def make_app(sink: ListSink, **limits: Any) -> Starlette:
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")   # what the server writes to
    settings = Settings(server=ServerSettings(admin_token=TOKEN, watch_charts=False),
                        limits=LimitsSettings(**limits))
    return create_app(settings, voice_factory=fake_voice_factory(["hello"]),
                      log_sink=FanOutSink(sink, JsonLinesSink(stdout)))


def route_paths(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, frozenset[str]]]:
    """(path template, methods) of every HTTP route; WebSocket routes as method-less paths."""
    found: list[tuple[str, frozenset[str]]] = []
    for route in routes:
        if isinstance(route, Mount):
            found += route_paths(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            found.append((prefix + route.path, frozenset(route.methods or ())))
        elif isinstance(route, WebSocketRoute):
            found.append((prefix + route.path, frozenset()))
    return found


# ------------------------------------------------------------- the requests
JSON = ((b"content-type", b"application/json"),)


@dataclass(frozen=True)
class Request:
    method: str
    raw_path: bytes
    query: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: tuple[bytes, ...] = (b"",)
    client: str = "127.0.0.1"

    def __repr__(self) -> str:   # what hypothesis prints for a failing example
        body = b"".join(self.body)
        return (f"{self.method} {self.raw_path[:200]!r}?{self.query[:100]!r} "
                f"headers={self.headers!r} body[{len(body)}]={body[:200]!r} from {self.client}")


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


async def call(app: Starlette, request: Request) -> Reply:
    """One request through the ASGI interface; a streamed response (server-sent
    events) is read up to its first chunk, then the client goes away."""
    reply = Reply()
    chunks = list(request.body)
    answered = anyio.Event()

    async def receive() -> Message:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                             for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            reply.body.extend(message.get("body", b""))
            if reply.body or not message.get("more_body", False):
                answered.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": request.method, "scheme": "http",
             "path": unquote(request.raw_path.decode("ascii")), "raw_path": request.raw_path,
             "root_path": "", "query_string": request.query,
             "headers": [(b"host", b"127.0.0.1:5204"), *request.headers],
             "client": (request.client, 40000), "server": ("127.0.0.1", 5204)}
    with anyio.fail_after(20):
        await app(scope, receive, send)
    return reply


def encoded(text: str) -> str:
    return quote(text, safe="")


SEGMENTS = ["voice_turn", "voice_turn.svg", "voice_turn.json", "voice_turn.mmd", "voice_turn.",
            ".svg", "voice_turn.exe", "nope", "nope.json", "fuzz-1", "%00", "%ff%fe", "%2F",
            "..%2F..%2Fetc%2Fpasswd", "%20", "a" * 3000, "%E2%82%AC", "%F0%9F%98%80", "NaN", "-1",
            "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "voice_turn%00.svg", "%25", "%ED%A0%80"]
EXTRA_PATHS = ["/", "/nope", "//health", "/health/", "/charts/", "/charts/voice_turn/extra",
               "/sessions/", "/%2e%2e/%2e%2e/etc/passwd", "/inspect/../health", "/" + "x" * 5000,
               "/charts/voice_turn.svg/reload", "/%ff"]
QUERIES = [b"", b"a=1&a=2", b"%zz", b"x=" + b"y" * 5000, b"&&=&", b"session=%00", b"format=json",
           b"since=-1", b"limit=NaN", b"%E2%82", b"q=%F0%9F%98%80", b"session_id=fuzz-1&since=0",
           b"=", b"%ff%fe"]   # ASCII: uvicorn's h11 refuses any other byte in a request target
OFFER = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n", "webrtc_id": "fz1"}
BODIES = [b"", b"{nope", b"[]", b"null", b"NaN", b"\xff\xfe\x00", b"[" * 60_000,
          b'{"a":' * 20_000, b"x" * 200_000, json.dumps(OFFER).encode(),
          json.dumps({**OFFER, "sdp": "garbage"}).encode(),
          json.dumps({**OFFER, "sdp": "v=0\ud800"}).encode("utf-8", "surrogatepass"),
          b'{"type": "offer", "sdp": "v=0 \\ud800 m=audio", "webrtc_id": "fz2"}',
          json.dumps({**OFFER, "webrtc_id": "bad id!"}).encode(),
          json.dumps({**OFFER, "webrtc_id": "x" * 500}).encode(),
          json.dumps({**OFFER, "type": "ice-candidate", "candidate": {"candidate": "c"}}).encode(),
          json.dumps({**OFFER, "type": 5, "extra": [1, 2]}).encode(),
          json.dumps({"sdp": None, "type": None, "webrtc_id": None}).encode(),
          json.dumps({"text": "😀" * 1000}, ensure_ascii=False).encode()]
CONTENT_TYPES = [b"application/json", b"text/plain", b"application/x-www-form-urlencoded",
                 b"multipart/form-data; boundary=xyz", b"application/json; charset=latin-1",
                 b"\xff\xfe", b""]
ORIGINS = [b"http://127.0.0.1:5204", b"http://evil.example", b"null", b"http://[::1", b"\xff",
           b"https://127.0.0.1:5204/x"]
ACCEPTS = [b"*/*", b"text/html", b"application/json", b"text/event-stream", b"garbage/\xff"]

json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                     st.text(max_size=20)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), inner,
                                                                   max_size=4)),
                           max_leaves=10)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    return draw(st.one_of(
        st.sampled_from(BODIES), st.sampled_from(BODIES), st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"type": st.sampled_from(["offer", "ice-candidate", "x"]),
                               "webrtc_id": st.text(max_size=10), "sdp": json_values},
                              optional={"candidate": json_values, "extra": json_values})
        .map(lambda v: json.dumps(v).encode())))


def fill(template: str, value: str) -> str:
    """The path of a route template with every parameter set to `value` (URL-encoded)."""
    return "/".join(value if part.startswith("{") else part for part in template.split("/"))


@st.composite
def requests(draw: st.DrawFn, routes: list[tuple[str, frozenset[str]]]) -> Request:
    writers = [r for r in routes if r[1] - {"GET", "HEAD"}]   # routes that take a body
    if draw(st.integers(0, 9)) == 0:
        raw_path = draw(st.sampled_from(EXTRA_PATHS))
        own: frozenset[str] = frozenset()
    else:
        template, own = draw(st.sampled_from(writers if draw(st.integers(0, 2)) == 0
                                             else routes))
        raw_path = fill(template, draw(st.one_of(
            st.sampled_from(SEGMENTS),
            st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
            .map(encoded))))
    mostly_own = draw(st.integers(0, 3)) > 0
    if own and mostly_own:
        method = draw(st.sampled_from(sorted(own)))
    else:
        method = draw(st.sampled_from(METHODS))
    body = draw(bodies()) if method not in ("GET", "HEAD") or draw(st.integers(0, 5)) == 0 \
        else b""
    size = draw(st.sampled_from([1, 7, 4096, 70_000]))
    chunks = tuple(body[i:i + size] for i in range(0, len(body), size)) or (b"",)
    headers: list[tuple[bytes, bytes]] = []
    length = draw(st.sampled_from(["true", "true", "none", b"abc", b"-5", b"1", b"99999999999"]))
    if length == "true":
        headers.append((b"content-length", str(len(body)).encode()))
    elif isinstance(length, bytes):
        headers.append((b"content-length", length))
    if draw(st.booleans()):
        headers.append((b"content-type", draw(st.sampled_from(CONTENT_TYPES))))
    if draw(st.booleans()):
        headers.append((b"accept", draw(st.sampled_from(ACCEPTS))))
    if draw(st.integers(0, 3)) == 0:
        headers.append((b"origin", draw(st.sampled_from(ORIGINS))))
    if draw(st.booleans()):
        headers.append((b"authorization",
                        draw(st.sampled_from([b"Bearer " + TOKEN.encode(), b"Bearer nope",
                                              b"Basic Zm9vOmJhcg==", b"Bearer"]))))
    client = draw(st.sampled_from(["127.0.0.1", "10.0.0.1", "::1"])) if draw(st.booleans()) \
        else f"10.1.{draw(st.integers(0, 255))}.{draw(st.integers(0, 255))}"
    return Request(method, raw_path.encode("ascii"), draw(st.sampled_from(QUERIES)),
                   tuple(headers), chunks, client)


def check_reply(request: Request, reply: Reply) -> None:
    assert reply.status, "no response at all"
    assert reply.status < 500 or reply.status in ALLOWED_5XX, (reply.status, bytes(reply.body))
    assert b"Traceback" not in reply.body
    if reply.status >= 400 and request.method != "HEAD":
        assert reply.headers.get("content-type", "").startswith("application/json"), \
            (reply.status, reply.headers, bytes(reply.body[:200]))
        answer = json.loads(reply.body)
        assert isinstance(answer, dict), answer
        assert isinstance(answer.get("error"), str) and answer["error"].strip(), answer


class Tracebacks(logging.Handler):
    """Every Python log record with an exception attached, or at ERROR or above."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.seen.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def watching_python_logs() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def check_log(sink: ListSink, python_logs: Tracebacks) -> None:
    assert python_logs.seen == []
    for record in sink.records:
        assert "Traceback" not in json.dumps(record, ensure_ascii=False), record
        assert record["event_type"] != "session_failed", record


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
def test_no_request_gets_a_500_and_every_4xx_explains_itself(budget: str) -> None:
    sink = ListSink()
    app = make_app(sink)
    routes = route_paths(list(app.routes))
    assert {"/health", "/charts/{ref}", "/webrtc/offer", "/sessions/{session_id}/events"} \
        <= {path for path, _ in routes}
    with watching_python_logs() as python_logs, \
            anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(app.router.lifespan_context(app)):

        @fuzz_settings(budget, short=250, long=6000)
        @given(request=requests(routes))
        def run(request: Request) -> None:
            check_reply(request, portal.call(call, app, request))

        run()
    check_log(sink, python_logs)


def test_every_route_with_every_method_and_bad_body() -> None:
    """The systematic part: each route (parameters good, unknown and odd) with each
    method, and each route that takes a body with each bad body, whole and chunked."""
    sink = ListSink()
    app = make_app(sink)
    routes = route_paths(list(app.routes))
    clients = (f"10.2.{i // 250}.{i % 250}" for i in itertools.count())   # no rate limit here
    cases: list[Request] = []
    for template, own in routes:
        for value in ("voice_turn", "nope", "%ff", "a" * 3000):
            path = fill(template, value).encode()
            cases += [Request(method, path, client=next(clients)) for method in METHODS]
            for method in sorted(own - {"GET", "HEAD"}):
                for body in BODIES:
                    for size in (len(body) or 1, 1000):
                        chunks = tuple(body[i:i + size] for i in range(0, len(body), size))
                        cases.append(Request(method, path, body=chunks or (b"",),
                                             headers=JSON, client=next(clients)))
    with watching_python_logs() as python_logs, \
            anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(app.router.lifespan_context(app)):
        for request in cases:
            check_reply(request, portal.call(call, app, request))
    check_log(sink, python_logs)


def test_the_fuzzer_reaches_every_kind_of_answer() -> None:
    """The property above could pass by never getting past the router; these
    requests show each kind of refusal it checks really happens."""
    sink = ListSink()
    app = make_app(sink, offers_per_minute=1)
    cases = [
        (Request("GET", b"/nope"), 404), (Request("DELETE", b"/health"), 405),
        (Request("GET", b"/charts/nope.svg"), 404), (Request("GET", b"/sessions/%ff"), 404),
        (Request("POST", b"/charts/voice_turn/reload"), 401),
        (Request("POST", b"/webrtc/offer", body=(b"[" * 60_000,), headers=JSON), 400),
        (Request("POST", b"/webrtc/offer", body=(b"x" * 70_000,), client="10.9.9.9"), 413),
        (Request("POST", b"/webrtc/offer", body=(json.dumps(OFFER).encode(),), headers=JSON,
                 client="10.8.8.8"), 400),
        (Request("POST", b"/webrtc/offer", body=(json.dumps(OFFER).encode(),), headers=JSON,
                 client="10.8.8.8"), 429),
        (Request("POST", b"/webrtc/offer", body=(b"{}",), client="10.7.7.7",
                 headers=((b"content-type", b"text/plain"),)), 415),
        (Request("POST", b"/webrtc/offer", body=(b"{}",), client="10.6.6.6",
                 headers=(*JSON, (b"origin", b"http://evil.example"))), 403),
        (Request("GET", b"/sessions/nobody/events"), 200),
        (Request("GET", b"/charts/voice_turn.json"), 200),
    ]
    with watching_python_logs() as python_logs, \
            anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(app.router.lifespan_context(app)):
        for request, status in cases:
            reply = portal.call(call, app, request)
            assert reply.status == status, (request, reply.status, bytes(reply.body[:300]))
            check_reply(request, reply)
    check_log(sink, python_logs)


# ------------------------------------------------------------- WebSocket
WS_JUNK: list[str | bytes] = [
    "{nope", "[]", "null", '"text"', "[" * 50_000, "", "😀" * 10, '{"event": "bogus"}',
    '{"event": null}', "{}", '{"event": "start"}', '{"event": "start", "websocket_id": "bad id!"}',
    '{"event": "start", "websocket_id": "' + "a" * 200 + '"}', '{"event": "media"}',
    '{"event": "media", "media": {"payload": "!!!"}}', '{"event": "media", "media": 5}',
    '{"event": "media", "media": {"payload": "AAAA"}}',     # before `start`
    '{"event": "transcript"}', '{"event": "transcript", "text": 5}',
    '{"event": "transcript", "text": "\\ud800"}', '{"event": "transcript", "text": "hello"}',
    b"\x00\x01", b"{}", b'{"event": "start", "websocket_id": "w1"}',
]


def not_a_message(text: str) -> bool:
    """Random text that is not one of the transport's valid messages."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(message, dict) and message.get("event") in ("start", "stop", "ping"))


ws_junk = st.one_of(st.sampled_from(WS_JUNK), st.text(max_size=40).filter(not_a_message),
                    st.binary(max_size=40))


@pytest.mark.parametrize("budget", FUZZ_BUDGETS)
def test_websocket_junk_gets_an_error_message_and_the_call_still_works(budget: str) -> None:
    sink = ListSink()
    app = make_app(sink, offers_per_minute=100_000)
    ids = itertools.count()
    with watching_python_logs() as python_logs, TestClient(app) as client:

        @fuzz_settings(budget, short=12, long=300)
        @given(messages=st.lists(ws_junk, min_size=1, max_size=6))
        def run(messages: list[str | bytes]) -> None:
            sid = f"wsfuzz-{next(ids)}"
            with client.websocket_connect("/websocket/offer") as ws:
                for message in messages:
                    if isinstance(message, bytes):
                        ws.send_bytes(message)
                    else:
                        ws.send_text(message)
                    answer = ws.receive_json()
                    assert answer["event"] == "error" and answer["error"].strip(), answer
                ws.send_json({"event": "start", "websocket_id": sid})
                ws.send_json({"event": "transcript", "text": "hello"})
                assert wait_for(lambda: any(
                    r["event_type"] == "state_transition" and r["session_id"] == sid
                    and r["data"]["to"] == "THINKING" for r in sink.records)), \
                    f"{sid}: the call did not work after the junk"
                ws.send_json({"event": "stop"})

        run()
    check_log(sink, python_logs)

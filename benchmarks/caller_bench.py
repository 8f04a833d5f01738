"""What a caller experiences, measured from outside (issue 14): `turnchart bench caller`.

A real WebRTC caller (aiortc, in this process) calls a real server (`turnchart
serve` in its own process, on a free loopback port, the shipped defaults) and
plays spoken WAVs made at bench time (flite's `rms` voice when the `flite`
command is there, else the project's eSpeak NG) into a temp dir. It records
every answer frame it receives with its arrival time, and the server's JSON
log lines say what the chart did. Measured:

- voice-to-voice: end of the caller's speech in the WAV (as sent) → first
  loud answer frame received (after the server began to speak: a filler is
  reported apart, as `voice_to_first_sound_ms`), beside the server's own
  `turn_latency` for the same turns (`server_turn_latency_ms`);
- barge-in: onset of the caller's speech over the answer → last loud frame of
  that answer received; a talk-over that never interrupts is `missed`;
- false cut-offs: utterances with a 400–900 ms pause mid-sentence; a cut-off
  is the server leaving LISTENING before the caller finished;
- false barge-ins: cough-like bursts, noise and a tone (non-speech) and
  backchannels ("uh-huh", "yeah") played over an answer;
- word error rate of the finals (`stt_final`) against the words said;
- capacity: the server process's CPU (utime+stime from /proc) ÷ calls ÷ wall
  time while callers talk, and the most concurrent calls measured whose
  voice-to-voice p95 stays at the target.

Each configuration runs on its own fresh server, one after the other: the
shipped defaults and the plain silence-endpointing baseline (learned end of
turn off; `baseline_overrides` in the output says exactly what was changed).
JSON on stdout; `targets` say met / not met.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from adapters.fastrtc.ice import restrict_to_loopback
from adapters.speech.audio import read_wav, resample
from adapters.speech.distance import edit_distance
from benchmarks.common import machine
from benchmarks.paused_speech import split_at_pause
from engine.runtime.latency import percentile
from engine.runtime.trace import EventReceived, StateTransition, TraceEvent, from_record

ROOT = Path(__file__).resolve().parent.parent
RATE = 48_000
FRAME = 960                 # 20 ms
LOUD_RMS = 300.0            # a received frame louder than this is answer audio
TARGETS = {"voice_to_voice_p95_ms": 600.0, "barge_in_p95_ms": 300.0,
           "false_cutoff_rate": 0.05, "false_barge_ins_non_speech": 0, "wer": 0.10}

QUESTIONS = ["hello", "what time is it", "what is a statechart", "does it work offline",
             "tell me a joke", "what is barge in", "I am planning a trip to Paris next week",
             "thank you"]
INTERRUPTIONS = ["stop", "wait what time is it", "hold on", "stop please", "what is barge in"]
PAUSED = [("my number is", "five five five one two three four", 600),
          ("I would like a table", "for two people tomorrow evening", 800),
          ("the meeting is on", "Tuesday at three", 450),
          ("can you tell me", "what time it is", 700),
          ("I want to go to", "the train station", 900),
          ("my name is", "John Smith", 500)]
BACKCHANNELS = ["uh-huh", "yeah", "mm-hmm", "okay"]
NON_SPEECH = ["cough", "double_cough", "noise", "tone"]


# the caller's audio ---------------------------------------------------------------

@dataclass
class Clip:
    name: str
    kind: str                   # question | paused | story | interrupt | non_speech | backchannel
    text: str                   # the words said ('' for non-speech)
    pcm: np.ndarray[Any, Any]   # int16 at 48 kHz
    speech_start: int           # sample index where the sound starts
    speech_end: int             # ... and ends
    part2_start: int | None = None


class Voice:
    """Makes speech WAVs at bench time into a temp dir: flite (voice rms) or eSpeak NG."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.flite = shutil.which("flite")
        self.name = "flite rms" if self.flite else "eSpeak NG en-us (adapters.speech)"
        self._n = 0

    def say(self, text: str) -> np.ndarray[Any, Any]:
        """`text` spoken, trimmed to the speech, at 48 kHz."""
        if self.flite:
            self._n += 1
            path = self.workdir / f"say-{self._n}.wav"
            subprocess.run([self.flite, "-voice", "rms", "-t", text, "-o", str(path)],
                           check=True, capture_output=True, timeout=30)
            rate, pcm = read_wav(path)
        else:
            from adapters.speech.tts import EspeakTTS
            rate, pcm = EspeakTTS(output_rate=24_000).synthesize_all(text)
        start, end = _sound_bounds(pcm, rate)
        return resample(pcm[start:end], rate, RATE).astype(np.int16)


def _sound_bounds(pcm: np.ndarray[Any, Any], rate: int,
                  threshold: float = 300.0) -> tuple[int, int]:
    """First and last sample of the 10 ms blocks louder than `threshold`."""
    block = max(1, rate // 100)
    n = len(pcm) // block
    if n == 0:
        return 0, len(pcm)
    rms = np.sqrt(np.mean(pcm[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1))
    loud = np.nonzero(rms > threshold)[0]
    if len(loud) == 0:
        return 0, len(pcm)
    return int(loud[0] * block), int(min(len(pcm), (loud[-1] + 1) * block))


def _room(ms: float, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    return rng.normal(0, 20, int(RATE * ms / 1000)).astype(np.int16)


def _clip(name: str, kind: str, text: str, sound: np.ndarray[Any, Any], rng: np.random.Generator,
          part2_start: int | None = None) -> Clip:
    lead = _room(200, rng)
    pcm = np.concatenate([lead, sound, _room(200, rng)]).astype(np.int16)
    return Clip(name, kind, text, pcm, len(lead), len(lead) + len(sound),
                None if part2_start is None else len(lead) + part2_start)


def non_speech(name: str, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """Cough-like bursts (noise with a fast attack, decaying), broadband noise, a tone."""
    def cough(ms: float) -> np.ndarray[Any, Any]:
        n = int(RATE * ms / 1000)
        t = np.arange(n) / RATE
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / (ms / 1000 / 3))
        burst = rng.normal(0, 1, n)
        burst = np.convolve(burst, np.ones(6) / 6, mode="same")   # darker than white
        out: np.ndarray[Any, Any] = (burst * envelope * 9000).astype(np.int16)
        return out
    if name == "cough":
        return cough(220)
    if name == "double_cough":
        return np.concatenate([cough(200), _room(120, rng), cough(260)])
    if name == "noise":
        return (rng.normal(0, 2500, int(RATE * 0.6))).astype(np.int16)
    t = np.arange(int(RATE * 0.7)) / RATE
    return (np.sin(2 * np.pi * 1000 * t) * 5000).astype(np.int16)


# a WebRTC caller ------------------------------------------------------------------------

class Microphone(MediaStreamTrack):
    """Sends queued clips in real time (room noise in between) and remembers when
    each 20 ms frame went out, so a sample of a clip has a wall time."""

    kind = "audio"

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.queue: deque[Clip] = deque()
        self._buffer = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self._start: float | None = None
        self._rng = np.random.default_rng(seed)
        self.sent: list[tuple[int, float]] = []          # (pts, wall time it went out)
        self.clip_at: dict[int, int] = {}                # id(clip) → stream sample index

    def play(self, clip: Clip) -> None:
        self.queue.append(clip)

    @property
    def busy(self) -> bool:
        return bool(self.queue) or len(self._buffer) >= FRAME

    def wall_of(self, sample: int) -> float | None:
        """Wall time the stream's `sample` went out (None: not sent yet)."""
        for pts, wall in reversed(self.sent):
            if pts <= sample:
                return wall + (sample - pts) / RATE if sample < pts + FRAME else None
        return None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        while len(self._buffer) < FRAME and self.queue:
            clip = self.queue.popleft()
            self.clip_at[id(clip)] = self._pts + len(self._buffer)
            self._buffer = np.concatenate([self._buffer, clip.pcm])
        if len(self._buffer) >= FRAME:
            chunk, self._buffer = self._buffer[:FRAME], self._buffer[FRAME:]
        elif len(self._buffer):
            pad = _room(20, self._rng)[: FRAME - len(self._buffer)]
            chunk = np.concatenate([self._buffer, pad])
            self._buffer = np.zeros(0, dtype=np.int16)
        else:
            chunk = _room(20, self._rng)
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent.append((self._pts, time.time()))
        if len(self.sent) > 30_000:
            del self.sent[:10_000]
        self._pts += FRAME
        return frame


@dataclass
class Said:
    clip: Clip
    start: float | None = None    # wall time of the clip's first sample
    sound_start: float | None = None
    sound_end: float | None = None
    part2: float | None = None


async def dial(pc: RTCPeerConnection, base_url: str, session_id: str,
               timeout: float = 30.0) -> None:
    """Offer `pc` to `turnchart serve`'s /webrtc/offer as `session_id` and apply the
    answer (the tests' WebRTC caller dials the same way)."""
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.post(f"{base_url}/webrtc/offer", json={
            "sdp": offer.sdp, "type": offer.type, "webrtc_id": session_id})
    response.raise_for_status()
    answer = response.json()
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))


class Caller:
    def __init__(self, base_url: str, session_id: str, seed: int = 7) -> None:
        self.base_url, self.session_id = base_url, session_id
        self.mic = Microphone(seed)
        self.heard: list[tuple[float, float]] = []       # (wall time, rms)
        self.pc: RTCPeerConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.said: list[Said] = []

    async def connect(self) -> None:
        restrict_to_loopback()
        self.pc = RTCPeerConnection()
        self.pc.addTrack(self.mic)
        self.pc.createDataChannel("text")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._listen(track)))

        await dial(self.pc, self.base_url, self.session_id)

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            pcm = frame.to_ndarray().astype(np.float64)  # type: ignore[union-attr]
            self.heard.append((time.time(), float(np.sqrt(np.mean(pcm ** 2)))))

    async def say(self, clip: Clip) -> Said:
        """Queue `clip`, return once its last sample went out (times filled in)."""
        said = Said(clip)
        self.said.append(said)
        self.mic.play(clip)
        while id(clip) not in self.mic.clip_at:
            await asyncio.sleep(0.01)
        base = self.mic.clip_at[id(clip)]
        end = base + len(clip.pcm)
        while self.mic.wall_of(end - 1) is None:
            await asyncio.sleep(0.02)
        said.start = self.mic.wall_of(base)
        said.sound_start = self.mic.wall_of(base + clip.speech_start)
        said.sound_end = self.mic.wall_of(base + clip.speech_end)
        if clip.part2_start is not None:
            said.part2 = self.mic.wall_of(base + clip.part2_start)
        return said

    def loud(self, since: float, until: float = float("inf")) -> list[float]:
        return [at for at, rms in list(self.heard) if since < at <= until and rms > LOUD_RMS]

    def last_loud(self) -> float:
        return next((at for at, rms in reversed(self.heard) if rms > LOUD_RMS), 0.0)

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in self._tasks:
            task.cancel()


# the server -----------------------------------------------------------------------------

class Server:
    """`turnchart serve` on a free loopback port with `config`; its log lines parsed."""

    def __init__(self, workdir: Path, name: str, config: dict[str, Any]) -> None:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{name}.log"
        path = workdir / f"config-{name}.json"   # JSON is YAML
        path.write_text(json.dumps({**config, "server": {
            **config.get("server", {}), "host": "127.0.0.1", "port": self.port}}))
        exe = Path(sys.executable).with_name("turnchart")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "adapters.cli.main"]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([*command, "serve", "--config", str(path)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._records: list[dict[str, Any]] = []
        self._offset = 0

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited:\n" + self.log_path.read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"{self.base_url}/health", timeout=2).json().get("voice") \
                        == "running":
                    return
            time.sleep(0.25)
        raise RuntimeError("the server did not start:\n" + self.log_path.read_text()[-3000:])

    def records(self) -> list[dict[str, Any]]:
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and "event_type" in record:
                    self._records.append(record)
        return self._records

    def events(self, session: str) -> list[TraceEvent]:
        """The session's lines, typed (engine/runtime/trace.py); `wall` is the line's `ts`
        (the middle of its millisecond)."""
        out = []
        for record in self.records():
            if record.get("session_id") == session:
                with contextlib.suppress(ValueError):
                    out.append(from_record(record))
        return out

    def transitions(self, session: str) -> list[tuple[float, str, str, str]]:
        """(wall time, from, to, event) of the session's transitions."""
        return [(e.wall, e.source, e.target, e.event) for e in self.events(session)
                if isinstance(e, StateTransition)]

    def finals(self, session: str) -> list[tuple[float, str]]:
        return [(e.wall, str(e.payload.get("text", ""))) for e in self.events(session)
                if isinstance(e, EventReceived) and e.event == "stt_final"]

    async def state(self, session: str) -> str | None:
        async with httpx.AsyncClient(timeout=5) as client:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await client.get(f"{self.base_url}/sessions/{session}")
                if response.status_code == 200:
                    return str(response.json().get("state"))
        return None

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (user + system, all threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def _wall(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()


# measuring --------------------------------------------------------------------------------

async def _until(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return False


async def wait_quiet(server: Server, caller: Caller, since: float | None = None,
                     timeout: float = 30.0, min_after: float = 2.0, quiet_s: float = 1.0) -> bool:
    """Until the session listens again, at least `min_after` s after `since` (the end
    of what the caller said), with nothing loud heard and no transition for `quiet_s`."""
    since = time.time() if since is None else since
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        moves = server.transitions(caller.session_id)
        if not caller.mic.busy and now - since >= min_after \
                and now - caller.last_loud() > quiet_s \
                and (not moves or now - moves[-1][0] > quiet_s) \
                and await server.state(caller.session_id) == "LISTENING":
            return True
        await asyncio.sleep(0.1)
    return False


async def wait_speaking(server: Server, caller: Caller, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await server.state(caller.session_id) == "SPEAKING" and \
                caller.loud(time.time() - 0.3):
            return True
        await asyncio.sleep(0.05)
    return False


def _stats(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": round(percentile(ordered, 50), 1),
            "p95_ms": round(percentile(ordered, 95), 1),
            "max_ms": round(ordered[-1], 1) if ordered else 0.0,
            "values_ms": [round(v, 1) for v in values]}


def voice_to_voice(server: Server, caller: Caller, said: Said) -> dict[str, Any]:
    """One question: end of speech → first loud frame; the answer's after SPEAKING began."""
    end = said.sound_end or 0.0
    moves = server.transitions(caller.session_id)
    speaking = next((t for t, _f, to, _e in moves if to == "SPEAKING" and t > end), None)
    first_sound = next(iter(caller.loud(end)), None)
    first_answer = next(iter(caller.loud(speaking)), None) if speaking is not None else None
    return {"text": said.clip.text,
            "voice_to_voice_ms": None if first_answer is None
            else round((first_answer - end) * 1000, 1),
            "voice_to_first_sound_ms": None if first_sound is None
            else round((first_sound - end) * 1000, 1)}


_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
            "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


def words(text: str) -> list[str]:
    """Lower case, no punctuation, hyphens split, single digits spelt out."""
    out: list[str] = []
    for word in re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split():
        word = word.strip("'")
        if word.isdigit() and word not in _NUMBERS:
            out.extend(_NUMBERS.get(d, d) for d in word)
        elif word:
            out.append(_NUMBERS.get(word, word))
    return out


@dataclass
class Corpus:
    questions: list[Clip]
    stories: Clip
    interruptions: list[Clip]
    paused: list[Clip]
    non_speech: list[Clip]
    backchannels: list[Clip]


def make_corpus(voice: Voice, quick: bool, seed: int = 11) -> Corpus:
    rng = np.random.default_rng(seed)

    def spoken(text: str, kind: str) -> Clip:
        return _clip(text, kind, text, voice.say(text), rng)

    def paused(first: str, second: str, pause_ms: int) -> Clip:
        # spoken as one sentence and cut at the comma (benchmarks/paused_speech.py): the
        # first part keeps the intonation of an unfinished sentence, as a caller's would
        a, b = split_at_pause(voice.say(f"{first}, {second}"), len(voice.say(first)), RATE)
        gap = _room(pause_ms, rng)
        return _clip(f"{first} … {second} ({pause_ms} ms)", "paused", f"{first} {second}",
                     np.concatenate([a, gap, b]), rng, part2_start=len(a) + len(gap))

    questions = QUESTIONS[:2] if quick else QUESTIONS
    return Corpus(
        questions=[spoken(q, "question") for q in questions],
        stories=spoken("tell me a story", "story"),
        interruptions=[spoken(t, "interrupt") for t in INTERRUPTIONS[: 1 if quick else 5]],
        paused=[paused(*p) for p in PAUSED[: 1 if quick else 6]],
        non_speech=[_clip(n, "non_speech", "", non_speech(n, rng), rng)
                    for n in (NON_SPEECH[:1] if quick else NON_SPEECH)],
        backchannels=[spoken(t, "backchannel") for t in BACKCHANNELS[: 1 if quick else 4]])


async def _call(server: Server, name: str, seed: int = 7) -> Caller:
    caller = Caller(server.base_url, f"bench-{name}-{int(time.time() * 1000) % 10**8}", seed)
    await caller.connect()
    await _until(lambda: server.transitions(caller.session_id), 15)
    await asyncio.sleep(0.6)
    return caller


async def phase_questions(server: Server, corpus: Corpus) -> dict[str, Any]:
    """Voice-to-voice and the words heard, one caller asking in turn; CPU meanwhile."""
    caller = await _call(server, "v2v")
    cpu0, t0 = server.cpu_s(), time.monotonic()
    turns = []
    try:
        for clip in corpus.questions:
            said = await caller.say(clip)
            await wait_quiet(server, caller, said.sound_end)
            turns.append(said)
            await asyncio.sleep(0.4)
    finally:
        cpu, wall = server.cpu_s() - cpu0, time.monotonic() - t0
        await caller.close()
    rows = [voice_to_voice(server, caller, s) for s in turns]
    inside = [float(r["data"]["turn_latency_ms"]) for r in server.records()
              if r["session_id"] == caller.session_id and r["event_type"] == "turn_latency"]
    finals = server.finals(caller.session_id)
    for row, said, nxt in zip(rows, turns, [*turns[1:], None], strict=True):
        until = nxt.start if nxt is not None and nxt.start else float("inf")
        row["heard"] = " ".join(text for at, text in finals
                                if (said.start or 0) < at <= until)
    return {"rows": rows, "cpu_s": cpu, "wall_s": wall, "calls": 1, "server_turn_latency": inside}


async def phase_barge_in(server: Server, corpus: Corpus) -> dict[str, Any]:
    caller = await _call(server, "barge")
    rows: list[dict[str, Any]] = []
    try:
        for clip in corpus.interruptions:
            await caller.say(corpus.stories)
            if not await wait_speaking(server, caller):
                rows.append({"text": clip.text, "barge_in_ms": None, "missed": True,
                             "why": "the story never started"})
                await wait_quiet(server, caller)
                continue
            await asyncio.sleep(1.2)
            said = await caller.say(clip)
            await wait_quiet(server, caller, said.sound_end)
            onset = said.sound_start or 0.0
            moves = server.transitions(caller.session_id)
            barge = next((t for t, _f, _to, e in moves if e == "barge_in" and t >= onset - 0.05),
                         None)
            if barge is None or barge - onset > 3.0:
                rows.append({"text": clip.text, "barge_in_ms": None, "missed": True,
                             "why": "no barge_in within 3 s of the onset"})
                continue
            resumed = next((t for t, _f, to, _e in moves if to == "SPEAKING" and t > barge),
                           float("inf"))
            tail = caller.loud(onset, resumed)
            last = tail[-1] if tail else onset
            rows.append({"text": clip.text, "barge_in_ms": round((last - onset) * 1000.0, 1),
                         "decided_ms": round((barge - onset) * 1000.0, 1), "missed": False})
            await asyncio.sleep(0.3)
    finally:
        await caller.close()
    return {"rows": rows}


async def phase_cutoffs(server: Server, corpus: Corpus) -> dict[str, Any]:
    caller = await _call(server, "pause")
    rows: list[dict[str, Any]] = []
    try:
        for clip in corpus.paused:
            said = await caller.say(clip)
            await wait_quiet(server, caller, said.sound_end)
            moves = server.transitions(caller.session_id)
            start, end = said.start or 0.0, said.sound_end or 0.0
            took = next((t for t, f, to, _e in moves
                         if f == "LISTENING" and to == "THINKING" and t > start), None)
            rows.append({"text": clip.name, "cut_off": took is not None and took < end,
                         "turn_taken_ms_after_end": None if took is None
                         else round((took - end) * 1000.0, 1),
                         "no_turn": took is None})
            await asyncio.sleep(0.4)
    finally:
        await caller.close()
    return {"rows": rows}


async def phase_false_barge_ins(server: Server, corpus: Corpus) -> dict[str, Any]:
    caller = await _call(server, "noise")
    rows: list[dict[str, Any]] = []
    try:
        for clip in [*corpus.non_speech, *corpus.backchannels]:
            if await server.state(caller.session_id) != "SPEAKING":
                await wait_quiet(server, caller)
                await caller.say(corpus.stories)
                if not await wait_speaking(server, caller):
                    rows.append({"clip": clip.name, "kind": clip.kind, "barged_in": None})
                    continue
                await asyncio.sleep(0.8)
            said = await caller.say(clip)
            await asyncio.sleep(1.2)
            moves = server.transitions(caller.session_id)
            start, end = said.start or 0.0, (said.sound_end or 0.0) + 1.2
            barged = any(e == "barge_in" and start <= t <= end for t, _f, _to, e in moves)
            rows.append({"clip": clip.name, "kind": clip.kind, "barged_in": barged})
        stop = corpus.interruptions[0]
        if await server.state(caller.session_id) == "SPEAKING":
            await caller.say(stop)
        await wait_quiet(server, caller)
    finally:
        await caller.close()
    return {"rows": rows}


async def phase_load(server: Server, corpus: Corpus, calls: int, duration_s: float,
                     ) -> dict[str, Any]:
    """`calls` callers at once, each asking in turn for `duration_s`; server CPU meanwhile."""
    callers = [await _call(server, f"load{calls}-{i}", seed=100 + i) for i in range(calls)]
    cpu0, t0 = server.cpu_s(), time.monotonic()
    turns: list[tuple[Caller, Said]] = []

    async def talk(caller: Caller, offset: int) -> None:
        await asyncio.sleep(offset * 0.7)
        n = offset
        while time.monotonic() - t0 < duration_s:
            said = await caller.say(corpus.questions[n % len(corpus.questions)])
            await wait_quiet(server, caller, said.sound_end, timeout=max(5.0, duration_s))
            turns.append((caller, said))
            n += 1
            await asyncio.sleep(0.8)

    try:
        await asyncio.gather(*(talk(c, i) for i, c in enumerate(callers)))
    finally:
        cpu, wall = server.cpu_s() - cpu0, time.monotonic() - t0
        for caller in callers:
            await caller.close()
    rows = [voice_to_voice(server, c, s) for c, s in turns]
    return {"rows": rows, "cpu_s": cpu, "wall_s": wall, "calls": calls}


def _load_summary(load: dict[str, Any]) -> dict[str, Any]:
    values = [r["voice_to_voice_ms"] for r in load["rows"] if r["voice_to_voice_ms"] is not None]
    missing = sum(1 for r in load["rows"] if r["voice_to_voice_ms"] is None)
    per_call = load["cpu_s"] / load["wall_s"] / load["calls"] if load["wall_s"] else 0.0
    stats = _stats(values)
    return {"calls": load["calls"], "turns": len(load["rows"]), "unanswered": missing,
            "voice_to_voice_p95_ms": stats["p95_ms"], "voice_to_voice_p50_ms": stats["p50_ms"],
            "server_cpu_cores_per_call": round(per_call, 3),
            "at_target": bool(values) and missing == 0
            and stats["p95_ms"] <= TARGETS["voice_to_voice_p95_ms"]}


async def run_config(name: str, config: dict[str, Any], corpus: Corpus, workdir: Path,
                     load_levels: tuple[int, ...], load_s: float) -> dict[str, Any]:
    server = Server(workdir, name, config)
    try:
        await asyncio.to_thread(server.wait_ready)
        warm = await _call(server, "warm-up")      # first decode loads lazily: not measured
        said = await warm.say(corpus.questions[0])
        await wait_quiet(server, warm, said.sound_end)
        await warm.close()
        questions = await phase_questions(server, corpus)
        barge = await phase_barge_in(server, corpus)
        cutoffs = await phase_cutoffs(server, corpus)
        noise = await phase_false_barge_ins(server, corpus)
        loads = [questions] + [await phase_load(server, corpus, n, load_s)
                               for n in load_levels if n > 1]
        errors = sum(1 for r in server.records() if r.get("level") == "ERROR")
    finally:
        await asyncio.to_thread(server.stop)
    return summarise(questions, barge, cutoffs, noise, loads, errors)


def summarise(questions: dict[str, Any], barge: dict[str, Any], cutoffs: dict[str, Any],
              noise: dict[str, Any], loads: list[dict[str, Any]], errors: int,
              ) -> dict[str, Any]:
    v2v = [r["voice_to_voice_ms"] for r in questions["rows"] if r["voice_to_voice_ms"] is not None]
    first = [r["voice_to_first_sound_ms"] for r in questions["rows"]
             if r["voice_to_first_sound_ms"] is not None]
    bi = [r["barge_in_ms"] for r in barge["rows"] if r["barge_in_ms"] is not None]
    ref_words = sum(len(words(r["text"])) for r in questions["rows"])
    wrong = sum(edit_distance(words(r["text"]), words(r["heard"])) for r in questions["rows"])
    cut = sum(1 for r in cutoffs["rows"] if r["cut_off"])
    non_speech = [r for r in noise["rows"] if r["kind"] == "non_speech"]
    backchannel = [r for r in noise["rows"] if r["kind"] == "backchannel"]
    levels = [_load_summary(load) for load in loads]
    held = [lv["calls"] for lv in levels if lv["at_target"]]
    cpu_per_call = levels[-1]["server_cpu_cores_per_call"] if levels else 0.0
    result = {
        "voice_to_voice_ms": {**_stats(v2v), "unanswered": len(questions["rows"]) - len(v2v)},
        "voice_to_first_sound_ms": _stats(first),
        # The server's own view of the same turns (its `turn_latency` lines: its VAD's end
        # of speech → first answer frame handed to the transport), for the gap to the caller's.
        "server_turn_latency_ms": _stats(questions.get("server_turn_latency", [])),
        "turns": questions["rows"],
        "barge_in_ms": {**_stats(bi), "missed": sum(1 for r in barge["rows"] if r["missed"]),
                        "rows": barge["rows"]},
        "false_cutoffs": {"n": len(cutoffs["rows"]), "cut_off": cut,
                          "rate": round(cut / len(cutoffs["rows"]), 3) if cutoffs["rows"] else 0.0,
                          "rows": cutoffs["rows"]},
        "false_barge_ins": {
            "non_speech": {"n": len(non_speech),
                           "barged_in": sum(1 for r in non_speech if r["barged_in"]),
                           "rows": non_speech},
            "backchannels": {"n": len(backchannel),
                             "barged_in": sum(1 for r in backchannel if r["barged_in"]),
                             "rows": backchannel}},
        "wer": {"reference_words": ref_words, "errors": wrong,
                "wer": round(wrong / ref_words, 3) if ref_words else 0.0},
        "capacity": {"levels": levels, "server_cpu_cores_per_call": cpu_per_call,
                     "cores": os.cpu_count(),
                     "calls_at_voice_to_voice_target": max(held) if held else 0,
                     "cpu_bound_estimate_calls": int((os.cpu_count() or 1) / cpu_per_call)
                     if cpu_per_call > 0 else None},
        "error_lines": errors,
    }
    result["targets"] = verdicts(result)
    return result


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured value and whether it is met (follows from the numbers)."""
    v2v, barge = result["voice_to_voice_ms"], result["barge_in_ms"]
    rows = {
        "voice_to_voice_p95_ms": (v2v["p95_ms"] if v2v["n"] and not v2v["unanswered"]
                                  else None),
        "barge_in_p95_ms": barge["p95_ms"] if barge["n"] and not barge["missed"] else None,
        "false_cutoff_rate": result["false_cutoffs"]["rate"]
        if result["false_cutoffs"]["n"] else None,
        "false_barge_ins_non_speech": result["false_barge_ins"]["non_speech"]["barged_in"]
        if result["false_barge_ins"]["non_speech"]["n"] else None,
        "wer": result["wer"]["wer"] if result["wer"]["reference_words"] else None,
    }
    return {name: {"target": f"<= {TARGETS[name]:g}", "value": value,
                   "met": value is not None and value <= TARGETS[name]}
            for name, value in rows.items()}


# configurations ----------------------------------------------------------------------------

def shipped_config() -> dict[str, Any]:
    """The defaults, as `turnchart serve` would run them, on a port of our own; offers per
    minute raised: the bench itself opens many calls from one address."""
    return {"charts": [str(ROOT / "charts" / "voice_turn.yaml")], "log": {"level": "INFO"},
            "server": {"watch_charts": False}, "limits": {"offers_per_minute": 10_000}}


def baseline_config(workdir: Path) -> tuple[dict[str, Any], list[str]]:
    """The shipped config with the learned end of turn off: plain silence endpointing.
    Returns the config and what was changed to get it."""
    config, changed = shipped_config(), []
    chart = ROOT / "charts" / "voice_turn.yaml"
    text = chart.read_text(encoding="utf-8")
    silenced = re.sub(r"(\bend:\s*)(smart|hybrid)\b", r"\1silence", text)
    if silenced != text:
        copy = workdir / "voice_turn_silence.yaml"
        copy.write_text(silenced, encoding="utf-8")
        config["charts"] = [str(copy)]
        changed.append("chart: every turn policy `end: smart`/`hybrid` → `end: silence`")
    from pydantic import BaseModel

    from adapters.config import Settings
    for section, info in Settings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for key, field in model.model_fields.items():
            if not re.search(r"end_of_turn|smart|turn_end|endpoint", key):
                continue
            default = field.default
            if isinstance(default, bool) and default:
                config.setdefault(section, {})[key] = False
                changed.append(f"{section}.{key}: true → false")
            elif isinstance(default, str) and default != "silence" and \
                    "silence" in get_args(field.annotation):   # e.g. voice.end_of_turn
                config.setdefault(section, {})[key] = "silence"
                changed.append(f"{section}.{key}: {default} → silence")
    return config, changed


def smart_turn_config(workdir: Path) -> tuple[dict[str, Any], str] | None:
    """For when the defaults do not use it: the shipped chart with `turn: {end: smart}` on
    LISTENING (Smart Turn v3.2 after a short silence), to show what it changes."""
    text = (ROOT / "charts" / "voice_turn.yaml").read_text(encoding="utf-8")
    match = re.search(r"^(\s*)LISTENING:\n(\s+)description:.*\n", text, re.MULTILINE)
    if match is None:
        return None
    copy = workdir / "voice_turn_smart.yaml"
    copy.write_text(text[: match.end()] + f"{match.group(2)}turn: {{end: smart}}\n"
                    + text[match.end():], encoding="utf-8")
    config = shipped_config()
    config["charts"] = [str(copy)]
    return config, "chart: `turn: {end: smart}` on LISTENING"


def run(*, quick: bool = False, load_levels: tuple[int, ...] | None = None,
        load_s: float | None = None, configs: tuple[str, ...] | None = None,
        ) -> dict[str, Any]:
    """The whole bench; returns the JSON-able result. `configs` defaults to the shipped
    defaults and the baseline, plus (full mode, when the defaults leave the learned end
    of turn off) `smart_turn`."""
    levels = load_levels if load_levels is not None else ((1,) if quick else (1, 2, 4))
    seconds = load_s if load_s is not None else (20.0 if quick else 40.0)
    started, load_before = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="turnchart-caller-") as tmp:
        workdir = Path(tmp)
        voice = Voice(workdir)
        corpus = make_corpus(voice, quick)
        baseline, changed = baseline_config(workdir)
        wanted = {"defaults": shipped_config(), "baseline": baseline}
        smart = smart_turn_config(workdir)
        if smart is not None:
            wanted["smart_turn"] = smart[0]
        if configs is None:
            configs = ("defaults", "baseline") if quick or changed or smart is None \
                else ("defaults", "baseline", "smart_turn")
        results: dict[str, Any] = {}
        for name in configs:
            results[name] = asyncio.run(run_config(name, wanted[name], corpus, workdir,
                                                   levels, seconds))
    headline = results.get("defaults") or next(iter(results.values()))
    return {
        "bench": "caller", "mode": "quick" if quick else "full",
        "command": "turnchart bench caller" + (" --quick" if quick else ""),
        # Other work on the machine inflates every time here: the 1-minute load average
        # before and after the run, beside the core count, says how much there was.
        "load_average_1m": {"before": round(load_before[0], 2),
                            "after": round(os.getloadavg()[0], 2)},
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round(time.time() - started, 1), "machine": machine(),
        "caller_voice": voice.name, "loud_rms": LOUD_RMS,
        "load_levels": list(levels), "load_s": seconds,
        "baseline_overrides": changed,
        "smart_turn_overrides": [smart[1]] if smart is not None and "smart_turn" in results
        else [],
        "baseline_todo": None if changed else
        "TODO: no learned end of turn is on in the shipped defaults (no `end: smart` in the "
        "chart, no *end_of_turn*/*smart* setting switched on), so the baseline ran the same "
        "silence endpointing as the defaults",
        "configs": results,
        "targets": headline["targets"],
    }

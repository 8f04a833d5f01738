"""Creates, finds, routes to and closes sessions; owns their tasks.

Use it as an async context manager: every session runs in the manager's task
group, so leaving the block (or `close`) leaves no task of any session alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from engine.chart.compiler import CompiledChart
from engine.chart.kernel import Kernel
from engine.chart.registry import Registry
from engine.runtime.clock import Clock
from engine.runtime.events import EventProblem, VoiceEvent, parse_event, truncate_raw
from engine.runtime.logs import EventLog
from engine.runtime.ports import Ports
from engine.runtime.session import Ack, Envelope, Session
from engine.runtime.snapshot import Snapshot, SnapshotStore
from engine.runtime.trace import ChartVersionMissing, EventInvalid, SessionUnknown

NO_SESSION = "-"


class SessionManager:
    def __init__(self, chart: CompiledChart, registry: Registry, ports: Ports, clock: Clock,
                 log: EventLog, store: SnapshotStore | None = None, *,
                 cancel_timeout_s: float = 2.0, effect_timeout_s: float = 5.0,
                 on_session_end: Callable[[str], None] | None = None) -> None:
        self.chart = chart
        # Told the id of each session whose task has ended, for whatever reason
        # (an owner that must resume sessions that stopped on their own need not
        # look at every session it runs to find them).
        self.on_session_end = on_session_end
        self.registry = registry
        self.ports = ports
        self.clock = clock
        self.log = log
        self.store = store
        self.cancel_timeout_s = cancel_timeout_s
        self.effect_timeout_s = effect_timeout_s
        self.sessions: dict[str, Session] = {}
        self._kernels: dict[str, Kernel] = {chart.version_hash: Kernel(chart)}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._lifetime: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> SessionManager:
        # The task group of the session consumers lives in one exit stack, from
        # here to `__aexit__` (which closes every session first).
        async with contextlib.AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._lifetime = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close_all()
        lifetime, self._lifetime = self._lifetime, None
        assert lifetime is not None
        try:
            await lifetime.__aexit__(*exc)
        finally:
            self._tg = None

    # --------------------------------------------------------------- sessions
    def use_chart(self, chart: CompiledChart) -> None:
        """Hot reload: sessions opened from now on without a snapshot start on
        `chart`. Running sessions keep theirs; every version seen stays in memory
        (one kernel each) so a session resumed from its snapshot keeps its own."""
        self.chart = chart
        self._kernel(chart)

    def _kernel(self, chart: CompiledChart) -> Kernel:
        """The one kernel of a chart version, built the first time it is needed."""
        kernel = self._kernels.get(chart.version_hash)
        if kernel is None:
            kernel = self._kernels[chart.version_hash] = Kernel(chart)
        return kernel

    async def open(self, session_id: str, *, chart: CompiledChart | None = None,
                   resume: bool = False) -> Session:
        """Create a session (or return the live one). With `resume`, restore its
        snapshot from the store when there is one."""
        if self._tg is None:
            raise RuntimeError("use the SessionManager as `async with manager:`")
        if not session_id or not session_id.strip():
            raise ValueError("session_id must be non-empty")
        existing = self.sessions.get(session_id)
        if existing is not None and not existing.closed:
            return existing
        chart = chart or self.chart
        snapshot = await self.store.load(session_id) if (resume and self.store) else None
        if snapshot is not None and snapshot.version_hash != chart.version_hash:
            chart = self._version_of(snapshot, chart)
        kernel = self._kernel(chart)
        session = Session(session_id, chart, kernel, self.registry, self.ports, self.clock,
                          self.log, self.store, snapshot=snapshot,
                          cancel_timeout_s=self.cancel_timeout_s,
                          effect_timeout_s=self.effect_timeout_s)
        self.sessions[session_id] = session
        self._tasks[session_id] = self._tg.create_task(self._run(session),
                                                       name=f"session:{session_id}")
        await asyncio.sleep(0)  # let it enter its initial state before events arrive
        return session

    def _version_of(self, snapshot: Snapshot, current: CompiledChart) -> CompiledChart:
        """The chart version a snapshot names, when this process still has it;
        else `current` (logged): the session resumes on it if its states exist
        there, and `Session` refuses the snapshot otherwise."""
        kernel = self._kernels.get(snapshot.version_hash)
        if kernel is not None:
            return kernel.chart
        self.log.publish(ChartVersionMissing(*self.log.stamp(snapshot.session_id),
                                             chart=snapshot.chart,
                                             version_hash=snapshot.version_hash,
                                             resumed_on=current.version_hash))
        return current

    async def _run(self, session: Session) -> None:
        try:
            await session.run()
        except Exception:
            # Already logged as session_failed. One broken session must not take
            # the manager's task group, and with it every other session, down;
            # its last snapshot stays in the store for `open(..., resume=True)`.
            pass
        finally:
            if self.sessions.get(session.id) is session:
                del self.sessions[session.id]
                self._tasks.pop(session.id, None)
            if self.on_session_end is not None:
                self.on_session_end(session.id)

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def close(self, session_id: str) -> bool:
        """Close a session and wait until nothing of it runs any more."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        task = self._tasks.get(session_id)
        session.close()
        await session.finished.wait()
        if task is not None:
            await asyncio.wait([task])
        if self.store is not None:
            await self.store.delete(session_id)
        return True

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.close(session_id)

    # ---------------------------------------------------------------- routing
    def deliver(self, raw: Any, *, ack: Ack | None = None, entry_id: str | None = None) -> bool:
        """Route a raw input (mapping, JSON text or VoiceEvent) to its session by
        `session_id`. Invalid input or an unknown session is logged and dropped."""
        try:
            event = parse_event(raw)
        except EventProblem as problem:
            sid = raw.get("session_id") if isinstance(raw, Mapping) else None
            if not (isinstance(sid, str) and sid.strip() and len(sid) <= 256
                    and truncate_raw(sid) == sid):
                sid = NO_SESSION   # a session_id that is itself the problem is not repeated
            self.log.publish(EventInvalid(*self.log.stamp(sid),
                                          error=f"{problem.field}: {problem.error}",
                                          field=problem.field, raw=problem.raw))
            return False
        return self.route(event, ack=ack, entry_id=entry_id)

    def route(self, event: VoiceEvent, *, ack: Ack | None = None,
              entry_id: str | None = None) -> bool:
        session = self.sessions.get(event.session_id)
        if session is None or session.closed:
            active = sorted(self.sessions)
            shown = active[:20] + ([f"…(+{len(active) - 20})"] if len(active) > 20 else [])
            self.log.publish(SessionUnknown(*self.log.stamp(event.session_id),
                                            event=event.event_type,
                                            active_sessions=tuple(shown),
                                            active_count=len(active)))
            return False
        session.post(Envelope(event=event, entry_id=entry_id, ack=ack))
        return True

    def live_tasks(self) -> int:
        """Session consumers plus their activities still running (0 after close_all)."""
        return (sum(1 for t in self._tasks.values() if not t.done())
                + sum(s.live_tasks() for s in self.sessions.values()))

"""Hot reload of chart files: validate a new version first, swap it in only when
it is good, say so in the log, and watch the files for changes.

    reloader = ChartReloader(catalog, log, on_change=service.follow)
    async with ChartWatcher(reloader, catalog.entries):   # polls until the block ends
        ...

A reload never stops anything that runs: the swap only changes the version
new sessions start on (`on_change` tells the owner of those sessions). A
version with errors changes nothing but the errors shown next to the chart.

Files are polled (stat every `poll_s`) rather than watched with inotify: that
needs no extra library, works on every file system, and sees editors that
write a temporary file and rename it over the chart (the inode changes). A
change is acted on once the file has been quiet for `settle_s`, so a burst of
writes from one save is read once, complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from engine.chart.catalog import ChartCatalog, Reload
from engine.runtime.logs import EventLog

NO_SESSION = "-"
Signature = tuple[int, int, int] | None   # (inode, size, mtime_ns); None: missing


class ChartReloader:
    """Reloads chart files one at a time (a later reload never loses to an
    earlier one) and logs `chart_reloaded` / `chart_reload_failed`."""

    def __init__(self, catalog: ChartCatalog, log: EventLog,
                 on_change: Callable[[Reload], None] | None = None) -> None:
        self.catalog = catalog
        self.log = log
        self.on_change = on_change
        self._lock = asyncio.Lock()

    async def reload(self, path: str, *, trigger: str) -> Reload:
        """Validate and compile `path` off the event loop, then swap it in when
        it is good. `trigger` (`file`, `http`) is logged."""
        async with self._lock:
            candidate = await asyncio.to_thread(self.catalog.prepare, path)
            result = self.catalog.apply(candidate)
        if result.same_source:
            return result
        self._log(result, trigger)
        if result.changed and self.on_change is not None:
            self.on_change(result)
        return result

    def _log(self, result: Reload, trigger: str) -> None:
        entry, running = result.entry, result.current
        running_data: dict[str, Any] = {
            "version": running.version if running else None,
            "version_hash": running.version_hash if running else None}
        if not result.ok:
            keeps = (f"v{running.version} {running.version_hash} keeps running" if running
                     else "no version runs")
            self.log.emit("ERROR", NO_SESSION, "chart_reload_failed",
                          f"🚫 {entry.name}: {len(result.errors)} error(s) in "
                          f"{entry.path}; {keeps}",
                          {"chart": entry.name, "path": entry.path, "trigger": trigger,
                           "errors": [str(e) for e in result.errors], **running_data})
            return
        if not result.changed and not result.previous_errors:
            return          # e.g. only comments changed: the same version
        old = result.previous
        if old is None:
            what = "first good version: "
        elif result.changed:
            what = f"v{old.version} {old.version_hash} → "
        else:
            what = "errors fixed, still "
        self.log.emit("INFO", NO_SESSION, "chart_reloaded",
                      f"🔁 {entry.name}: {what}v{running_data['version']} "
                      f"{running_data['version_hash']} (new sessions)",
                      {"chart": entry.name, "path": entry.path, "trigger": trigger,
                       "old_version": old.version if old else None,
                       "old_version_hash": old.version_hash if old else None,
                       **running_data})


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileChanges:
    """Which files changed and have been quiet for `settle_s` since (pure
    book-keeping; the caller supplies the time). Every file counts as changed
    at the start, so an edit made before watching began is not missed."""

    def __init__(self, paths: Iterable[str], settle_s: float) -> None:
        self.settle_s = settle_s
        self._seen: dict[str, Signature] = {}
        self._changed_at: dict[str, float] = {}
        self._first = list(dict.fromkeys(paths))

    def poll(self, now: float) -> list[str]:
        """Look at every file; return those whose last change is `settle_s` old."""
        for path in self._first:
            self._seen[path] = _signature(path)
            self._changed_at[path] = float("-inf")     # due at once
        self._first = []
        for path, seen in self._seen.items():
            current = _signature(path)
            if current != seen:
                self._seen[path] = current
                self._changed_at[path] = now
        due = [p for p, at in self._changed_at.items() if now - at >= self.settle_s]
        for path in due:
            del self._changed_at[path]
        return due


class ChartWatcher:
    """Polls chart files and reloads each once its change has settled. Use it as
    `async with`: the polling task lives in its own task group and is cancelled
    when the block ends."""

    def __init__(self, reloader: ChartReloader, paths: Iterable[str | Path], *,
                 poll_s: float = 0.25, settle_s: float = 0.3) -> None:
        self.reloader = reloader
        self.paths = [str(p) for p in paths]
        self.poll_s = poll_s
        self.changes = FileChanges(self.paths, settle_s)
        self._lifetime: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> ChartWatcher:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._polling())
            self._lifetime = stack.pop_all()
        self.reloader.log.emit("INFO", NO_SESSION, "chart_watch_started",
                               f"👀 watching {len(self.paths)} chart file(s) for changes",
                               {"paths": self.paths, "poll_s": self.poll_s,
                                "settle_s": self.changes.settle_s})
        return self

    async def __aexit__(self, *exc: object) -> None:
        lifetime, self._lifetime = self._lifetime, None
        if lifetime is not None:
            await lifetime.aclose()

    @contextlib.asynccontextmanager
    async def _polling(self) -> AsyncIterator[None]:
        """The polling task in its task group, cancelled when the watcher closes."""
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(self.run(), name="chart-watcher")
            try:
                yield
            finally:
                task.cancel()

    async def run(self) -> None:
        while True:
            for path in self.changes.poll(time.monotonic()):
                try:
                    await self.reloader.reload(path, trigger="file")
                except Exception as exc:   # a reload must never end the watching
                    self.reloader.log.emit(
                        "ERROR", NO_SESSION, "chart_reload_failed",
                        f"💥 reloading {path} failed: {type(exc).__name__}: {exc}",
                        {"path": path, "trigger": "file",
                         "errors": [f"{type(exc).__name__}: {exc}"]})
            await asyncio.sleep(self.poll_s)

"""The set of charts a process serves, by name, with the problems of any that failed.

A bad chart never replaces a good one: a (re)load keeps the last good version
of a chart and records the errors of the new one next to it. A good new
version becomes the *current* one, the version new sessions start on; running
sessions keep the chart object they started with, so several versions of one
chart can be live at once. `count_versions` and `ChartEntry.live_versions`
say which, and how many sessions each has.

Reloading is split in two so that the slow half can run off the event loop:
`prepare` reads and compiles a file without touching the catalog, `apply`
swaps the result in (instantly). `load` does both.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.chart.chart import compile_text
from engine.chart.compiler import CompiledChart
from engine.chart.errors import ChartError, ChartErrors
from engine.chart.registry import Registry


@dataclass(frozen=True)
class VersionUse:
    """How many live sessions run one version of a chart."""

    chart: str
    version: int
    version_hash: str
    sessions: int

    def to_dict(self) -> dict[str, Any]:
        return {"chart": self.chart, "version": self.version,
                "version_hash": self.version_hash, "sessions": self.sessions}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionUse:
        return cls(chart=str(data["chart"]), version=int(data["version"]),
                   version_hash=str(data["version_hash"]), sessions=int(data["sessions"]))


def count_versions(charts: Iterable[CompiledChart]) -> list[VersionUse]:
    """One `VersionUse` per distinct chart version among `charts` (the chart of
    each live session), counting how often it occurs."""
    counts: Counter[str] = Counter()
    seen: dict[str, CompiledChart] = {}
    for chart in charts:
        counts[chart.version_hash] += 1
        seen.setdefault(chart.version_hash, chart)
    return [VersionUse(seen[h].name, seen[h].version, h, n) for h, n in counts.items()]


@dataclass(frozen=True)
class LiveVersion:
    """One version of a chart that is current or still has sessions."""

    version: int
    version_hash: str
    sessions: int
    current: bool

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "version_hash": self.version_hash,
                "sessions": self.sessions, "current": self.current}


@dataclass
class ChartEntry:
    """One chart file: its current good version (if any) and its latest problems."""

    path: str
    chart: CompiledChart | None = None
    errors: tuple[ChartError, ...] = ()
    # sha256 of the bytes last read (good or bad): the same bytes are not compiled twice.
    source_digest: str | None = None

    @property
    def name(self) -> str:
        return self.chart.name if self.chart else Path(self.path).stem

    def live_versions(self, uses: Iterable[VersionUse]) -> list[LiveVersion]:
        """The current version (listed even with no session), then every older
        version of this chart that still has sessions, most sessions first.
        `uses` may repeat a version (one line per worker): they are summed."""
        sessions: Counter[str] = Counter()
        versions: dict[str, int] = {}
        current = self.chart.version_hash if self.chart else None
        for use in uses:
            if use.chart == self.name or use.version_hash == current:
                sessions[use.version_hash] += use.sessions
                versions[use.version_hash] = use.version
        live = []
        if self.chart is not None:
            live.append(LiveVersion(self.chart.version, self.chart.version_hash,
                                    sessions.pop(self.chart.version_hash, 0), True))
        older = sorted((n, h) for h, n in sessions.items() if n > 0)
        live += [LiveVersion(versions[h], h, n, False) for n, h in reversed(older)]
        return live


@dataclass(frozen=True)
class Candidate:
    """A chart file read and compiled, not yet in use. `same_source`: the bytes
    are those the catalog already has, so there is nothing to apply."""

    path: str
    digest: str | None
    chart: CompiledChart | None = None
    errors: tuple[ChartError, ...] = ()
    same_source: bool = False


@dataclass(frozen=True)
class Reload:
    """What applying one (re)load of a chart file did."""

    entry: ChartEntry
    previous: CompiledChart | None          # the version new sessions started on before
    current: CompiledChart | None           # the version they start on now
    errors: tuple[ChartError, ...]          # the file's problems now (empty: it is valid)
    previous_errors: tuple[ChartError, ...]  # the problems recorded before this reload
    same_source: bool = False               # the file had not changed: nothing was done

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        """A new version is now current (new sessions start on it)."""
        return (self.ok and self.current is not None
                and (self.previous is None
                     or self.previous.version_hash != self.current.version_hash))


@dataclass
class ChartCatalog:
    registry: Registry
    entries: dict[str, ChartEntry] = field(default_factory=dict)

    def prepare(self, path: str | Path) -> Candidate:
        """Read and compile a chart file; the catalog is not changed (safe to run
        in a worker thread). Unchanged bytes are not compiled again."""
        key = str(path)
        try:
            data = Path(path).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            entry = self.entries.get(key)
            if entry is not None and entry.source_digest == digest:
                return Candidate(key, digest, same_source=True)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return Candidate(key, None,
                             errors=(ChartError(key, 1, 1, "E100", f"cannot read chart: {exc}"),))
        try:
            return Candidate(key, digest, chart=compile_text(text, key, self.registry))
        except ChartErrors as exc:
            return Candidate(key, digest, errors=exc.errors)

    def apply(self, candidate: Candidate) -> Reload:
        """Make a prepared candidate current, or record its errors and keep the
        current version."""
        entry = self.entries.setdefault(candidate.path, ChartEntry(candidate.path))
        previous, previous_errors = entry.chart, entry.errors
        if not candidate.same_source:
            entry.source_digest = candidate.digest
            entry.errors = candidate.errors
            if candidate.chart is not None:
                entry.chart = candidate.chart
        return Reload(entry, previous, entry.chart, entry.errors, previous_errors,
                      candidate.same_source)

    def add(self, path: str | Path, chart: CompiledChart) -> ChartEntry:
        """Serve a chart compiled elsewhere from `path` (its bytes are read and
        compared on the next reload)."""
        entry = self.entries.setdefault(str(path), ChartEntry(str(path)))
        entry.chart, entry.errors, entry.source_digest = chart, (), None
        return entry

    def reload(self, path: str | Path) -> Reload:
        return self.apply(self.prepare(path))

    def load(self, path: str | Path) -> ChartEntry:
        """(Re)load a chart file; on errors keep the previous good version."""
        return self.reload(path).entry

    def by_name(self, name: str) -> ChartEntry | None:
        for entry in self.entries.values():
            if entry.name == name:
                return entry
        return None

    def charts(self) -> list[CompiledChart]:
        return [e.chart for e in self.entries.values() if e.chart is not None]

"""`WorkerOptions`: every tuning knob of a Redis worker, in one frozen value.

`RedisWorker(url, chart, registry, ports, log, lease_ms=…, tick_s=…)` still takes
them as keywords (they become a `WorkerOptions`); the collaborators in
adapters/redis/ (ownership, adoption, read loop, dispatch, release) read them
from here and derive the periods below from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.redis.bus import DEFAULT_GROUP


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    lease_ms: int = 5000
    group: str = DEFAULT_GROUP
    retries: int = 6                   # connection retries of the worker's client
    block_ms: int = 1000               # a blocking read's timeout
    read_count: int = 100              # entries per stream per read
    tick_s: float = 0.05               # the ownership loop's period
    rescan_s: float | None = None      # full index rescan (default min(2 s, lease/2))
    rebalance: bool = True             # hand quiet sessions off when over the fair share
    max_sessions: int | None = None
    drain_timeout_s: float = 2.0       # how long a hand-off waits for in-flight events
    close_timeout_s: float = 5.0       # how long a closed session may take to finish
    ended_ttl_ms: int = 600_000        # an ended session's stream expires after this
    adopt_concurrency: int = 16        # concurrent adoptions (and other Redis batches)
    block_all_max: int = 32            # streams per lane (one blocking read); 0: no lanes
    max_lanes: int = 64                # past this many lanes: activity hints instead
    sweep_s: float = 0.25              # hinted mode: read every stream this often
    freeze_gc: bool = False            # gc.freeze() what adoptions built (DESIGN.md)
    full_gc_every_s: float = 600.0
    ack_with_save: bool = True         # a step's snapshot save also XACKs its entry
    max_in_flight: int = 256           # unapplied entries per session before throttling
    supervise_all_s: float = 10.0      # the supervisor's backstop pass over every session
    stats_every_s: float = 1.0         # counters and session reports for front-ends

    def __post_init__(self) -> None:
        for name in ("lease_ms", "block_ms", "read_count", "adopt_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"worker option {name} must be at least 1, "
                                 f"not {getattr(self, name)!r}")
        if self.tick_s <= 0:
            raise ValueError(f"worker option tick_s must be positive, not {self.tick_s!r}")

    @property
    def rescan_period_s(self) -> float:
        return self.rescan_s if self.rescan_s is not None else min(2.0, self.lease_ms / 2000.0)

    @property
    def renew_s(self) -> float:
        """A lease is renewed once a third of it has passed."""
        return self.lease_ms / 3000.0

    @property
    def slow_tick_s(self) -> float:
        """The period of the O(owned) work: renewal, fencing, supervision."""
        return max(self.tick_s, min(0.25, self.lease_ms / 10_000.0))

    @property
    def in_flight_cap(self) -> int:
        return max(1, self.max_in_flight)

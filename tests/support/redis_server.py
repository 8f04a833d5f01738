"""A private `redis-server` for tests: a free port, a temp dir, never the shared 6379.

    with RedisServer(tmp_path, appendonly=True) as server:
        url = server.url            # redis://127.0.0.1:PORT/0
        server.restart()            # same port and dir: AOF data survives

A missing `redis-server` is a test failure that says how to install it (the
suite must not silently skip the Redis tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.redis.bus import RedisEventBus
from adapters.redis.worker import RedisWorker
from engine.chart.chart import compile_text
from engine.runtime.behaviours import default_registry
from engine.runtime.clock import RealClock
from engine.runtime.events import VoiceEvent
from engine.runtime.logs import EventLog, ListSink
from engine.tools.fakes import fake_ports

INSTALL_HINT = ("redis-server is not installed; the Redis tests need it. Install it with "
                "`apt-get install redis-server` (scripts/test does this).")


def redis_server_binary() -> str:
    """The path of redis-server, or a test failure saying how to install it."""
    import pytest

    path = shutil.which("redis-server")
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1:PORT with its data in `directory`."""

    def __init__(self, directory: Path, *, appendonly: bool = False, port: int | None = None,
                 appendfsync: str = "always", extra_args: Sequence[str] = ()) -> None:
        self.binary = redis_server_binary()
        self.extra_args = list(extra_args)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / "redis-server.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync,
                "--protected-mode", "yes", "--daemonize", "no",
                "--logfile", str(self.log_path), *self.extra_args]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                   f"{self._log_tail()}")
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within "
                           f"{timeout}s: {self._log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """SIGTERM: a clean shutdown (the AOF is flushed); SIGKILL: a crash."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self, down_s: float = 0.0, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        if down_s:
            time.sleep(down_s)
        self.start()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


CLUSTER_SLOTS = 16384


class RedisClusterServers:
    """A private Redis Cluster on 127.0.0.1: `nodes` redis-server processes
    (cluster-enabled, each with its own free port and cluster-bus port), the
    16,384 slots split evenly between them, met, and waited for until every
    node says `cluster_state:ok`.

    One node that owns every slot is enough to catch what a client does wrong
    in a cluster (CROSSSLOT is about slots, not nodes); three also exercise
    the routing of keys, scripts and reads to the node that owns them.

        with RedisClusterServers(tmp_path, nodes=3) as cluster:
            url = cluster.url      # redis+cluster://127.0.0.1:PORT (any node is a seed)
    """

    def __init__(self, directory: Path, nodes: int = 1, *, node_timeout_ms: int = 5000) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.servers: list[RedisServer] = []
        self.bus_ports: list[int] = []
        for i in range(nodes):
            bus = free_port()
            self.bus_ports.append(bus)
            self.servers.append(RedisServer(Path(directory) / f"node{i}", extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus), "--cluster-node-timeout", str(node_timeout_ms)]))
        self.moved: dict[int, int] = {}        # slot → node, after move_slot
        share = CLUSTER_SLOTS // nodes
        self.slot_ranges = [
            (i * share, CLUSTER_SLOTS - 1 if i == nodes - 1 else (i + 1) * share - 1)
            for i in range(nodes)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def node_url(self, i: int) -> str:
        """A plain URL of one node (to look at it directly, e.g. `INFO cluster`)."""
        return f"redis://127.0.0.1:{self.servers[i].port}/0"

    def node_of_slot(self, slot: int) -> int:
        if slot in self.moved:
            return self.moved[slot]
        return next(i for i, (lo, hi) in enumerate(self.slot_ranges) if lo <= slot <= hi)

    def move_slot(self, slot: int, to: int) -> None:
        """Reshard one slot to node `to` the way redis-cli does: IMPORTING/MIGRATING,
        MIGRATE its keys, then give the slot to the new owner on every node."""
        import redis

        source = self.node_of_slot(slot)
        clients = [redis.Redis(port=s.port, decode_responses=True) for s in self.servers]
        try:
            ids = [c.execute_command("CLUSTER", "MYID") for c in clients]  # type: ignore[no-untyped-call]
            clients[to].execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
            clients[source].execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to])
            while keys := clients[source].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "GETKEYSINSLOT", slot, 100):
                clients[source].execute_command(  # type: ignore[no-untyped-call]
                    "MIGRATE", "127.0.0.1", self.servers[to].port, "", 0, 5000, "KEYS", *keys)
            for client in clients:
                client.execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "SETSLOT", slot, "NODE", ids[to])
            self.moved[slot] = to
        finally:
            for client in clients:
                client.close()

    def start(self, timeout: float = 30.0) -> None:
        import redis

        for server in self.servers:
            server.start()
        clients = [redis.Redis(port=s.port, decode_responses=True) for s in self.servers]
        try:
            for client, (lo, hi) in zip(clients, self.slot_ranges, strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)  # type: ignore[no-untyped-call]
            for server, bus in zip(self.servers[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "MEET", "127.0.0.1", server.port, bus)
            deadline = time.monotonic() + timeout
            while True:
                infos = [client.cluster("info") for client in clients]
                if all(str(info.get("cluster_state")) == "ok"
                       and int(info.get("cluster_known_nodes", 0)) == len(clients)
                       for info in infos):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the test cluster did not reach cluster_state:ok within "
                                       f"{timeout}s: {infos}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> RedisClusterServers:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def signal_child(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal one child process this test started, by its pid, and reap it. A child
    that has not exited 30 s after the signal (a loaded CI machine once took over 10 s
    for a worker's graceful stop) is killed, so no process outlives its test, and the
    test fails saying so."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired as slow:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"child {proc.pid} did not exit within 30 s of signal {sig}") \
            from slow


# ------------------------------------------------------------------ test rig
RING_STATES = 7
RING_CHART = "\n".join([
    "chart: ring",
    "version: 1",
    "description: every `step` moves one state on; N steps end in S(N mod 7), turn N.",
    "initial: S0",
    "contracts:",
    "  microphone: [open, closed]",
    "  playback: [stopped]",
    "events:",
    "  step: {payload: {n: int}}",
    "states:",
    *[f"  S{i}: {{contract: {{microphone: open, playback: stopped}}, "
      f"on: {{step: S{(i + 1) % RING_STATES}}}}}" for i in range(RING_STATES)],
    "",
])


def write_ring_chart(directory: Path) -> Path:
    path = Path(directory) / "ring.yaml"
    path.write_text(RING_CHART, encoding="utf-8")
    return path


def ring_state(steps: int) -> str:
    return f"S{steps % RING_STATES}"


# ----------------------------------------------------------- worker processes
ROOT = Path(__file__).resolve().parents[2]


def start_worker_process(url: str, chart: Path, worker_id: str, log_path: Path, *,
                         lease_ms: int = 1000, pause: str | None = None,
                         log_level: str = "INFO") -> subprocess.Popen[bytes]:
    """`python -m adapters.redis` (a worker) in its own process, JSON log lines to `log_path`."""
    import sys

    env = dict(os.environ)
    env.pop("TURNCHART_REDIS_PAUSE", None)
    if pause:
        env["TURNCHART_REDIS_PAUSE"] = pause
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed here after fork
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "adapters.redis", "--redis", url, "--chart", str(chart),
             "--worker-id", worker_id, "--lease-ms", str(lease_ms), "--log-level", log_level],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a worker (other lines, e.g. a traceback, are kept as text)."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = {"event_type": "(text)", "message": line, "session_id": "-", "data": {}}
        if isinstance(record, dict):
            records.append(record)
    return records


def wait_for_log(path: Path, event_type: str, timeout: float = 20.0,
                 proc: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in read_log(path):
            if record.get("event_type") == event_type:
                return record
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before {event_type}:\n"
                                 + path.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    raise AssertionError(f"no {event_type} line in {path} within {timeout}s:\n"
                         + path.read_text(errors="replace")[-3000:])


def debug_log() -> tuple[EventLog, ListSink]:
    """A DEBUG log on the real clock, kept in memory for assertions."""
    sink = ListSink()
    return EventLog(sink, RealClock(), level="DEBUG"), sink


def ring_worker(url: str, log: EventLog, **options: Any) -> RedisWorker:
    """A worker running RING_CHART with fake ports (2 s leases unless told)."""
    registry = default_registry()
    chart = compile_text(RING_CHART, "ring.yaml", registry)
    clock = RealClock()
    options.setdefault("lease_ms", 2000)
    return RedisWorker(url, chart, registry, fake_ports(clock), log, clock=clock, **options)


async def publish_through(bus: RedisEventBus, event: VoiceEvent, failures: list[str]) -> None:
    """A producer that keeps its event until Redis takes it, noting each failure
    (the bus de-duplicates a retry whose first attempt did arrive)."""
    while True:
        try:
            await bus.publish(event)
            return
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            failures.append(type(exc).__name__)
            await asyncio.sleep(0.05)

"""Redis Streams adapter: one event bus across processes and machines, durable
session snapshots, session ownership by lease, crash resume (docs/redis.md).

- `RedisEventBus`       producers: publish VoiceEvents, announce/end sessions
- `RedisSnapshotStore`  engine.runtime.snapshot.SnapshotStore on Redis (lease-fenced)
- `LeaseManager`        SET NX PX leases, renewal and release (Lua, atomic)
- `RedisWorker`         owns sessions, one XREADGROUP loop, exactly-once apply
- `run_worker`          the headless worker process (`turnchart worker --redis URL`)
"""

from adapters.redis.bus import RedisEventBus
from adapters.redis.keys import Keys
from adapters.redis.leases import LeaseManager
from adapters.redis.run import run_worker
from adapters.redis.snapshots import LeaseLost, RedisSnapshotStore
from adapters.redis.worker import RedisWorker, WorkerHooks

__all__ = ["Keys", "LeaseLost", "LeaseManager", "RedisEventBus", "RedisSnapshotStore",
           "RedisWorker", "WorkerHooks", "run_worker"]

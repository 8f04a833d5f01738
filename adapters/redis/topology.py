"""Where each key lives, for the connections this adapter drives by hand (the
stream reader and the auto-pipeline send raw commands for speed, so they do
their own routing; everything else goes through redis-py's clients).

One Redis: every key is on the one server and any keys may share a command.
A Redis Cluster: a key lives in the hash slot of its `{session_id}` tag, the
slot on the node that owns it; a command may only name keys of one slot (else
CROSSSLOT), so the reader reads slot by slot and sends each node its own
commands. The slot → node map comes from redis-py's `RedisCluster`;
`refresh()` re-reads it after a MOVED reply (a resharding or a failover).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, TryAgainError

from adapters.redis.connection import Client, plain_url

STANDALONE = "-"          # the node name of a single server

REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


def is_redirect(error: BaseException) -> bool:
    """A cluster reply that means "not here, or not now": re-route and send again.
    (redis-py's parser turns them into these classes and drops the word.)"""
    return isinstance(error, AskError | TryAgainError | ClusterDownError) \
        or str(error).startswith(REDIRECTS)


class Topology:
    def __init__(self, url: str, cluster: RedisCluster | None = None) -> None:
        self.url = url
        self.cluster = cluster
        self._slots: dict[str, int] = {}

    @classmethod
    async def of(cls, url: str, client: Client) -> Topology:
        """The topology behind `client` (a cluster client learns its slot map here)."""
        if isinstance(client, RedisCluster):
            await client.initialize()
            return cls(url, client)
        return cls(url)

    @property
    def clustered(self) -> bool:
        return self.cluster is not None

    def slot(self, key: str) -> int:
        """The key's hash slot in a cluster; 0 for every key on one server."""
        if self.cluster is None:
            return 0
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) > 100_000:
                self._slots.clear()
            slot = self._slots[key] = key_slot(key.encode())
        return slot

    def node(self, key: str) -> str:
        """The name (`host:port`) of the node that owns the key's slot."""
        if self.cluster is None:
            return STANDALONE
        owner = self.cluster.get_node_from_key(key)
        assert owner is not None   # a primary always (no replica asked for)
        return str(owner.name)

    def by_node(self, keys: Iterable[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(self.node(key), []).append(key)
        return groups

    def by_slot(self, keys: Iterable[str]) -> dict[int, list[str]]:
        """Keys that one command may name together."""
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(self.slot(key), []).append(key)
        return groups

    def pool(self, node: str, **options: Any) -> ConnectionPool:
        """A connection pool for one node, with the URL's credentials and TLS."""
        if self.cluster is None:
            return ConnectionPool.from_url(self.url, **options)
        host, _, port = node.rpartition(":")
        kwargs: dict[str, Any] = {**parse_url(plain_url(self.url)), **options,
                                  "host": host, "port": int(port)}
        return ConnectionPool(**kwargs)

    async def refresh(self) -> None:
        """Re-read the cluster's slot map (after MOVED/ASK/CLUSTERDOWN replies)."""
        if self.cluster is not None:
            await self.cluster.nodes_manager.initialize()

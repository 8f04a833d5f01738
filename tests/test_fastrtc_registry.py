"""Connection → session routing: direct match, handler registry, else a logged reject."""

from __future__ import annotations

from adapters.fastrtc.registry import ConnectionRegistry
from engine.runtime.clock import VirtualClock
from engine.runtime.logs import EventLog, ListSink


def make(active: list[str]) -> tuple[ConnectionRegistry, ListSink]:
    sink = ListSink()
    return ConnectionRegistry(EventLog(sink, VirtualClock()), lambda: list(active)), sink


def test_direct_match_when_the_connection_id_is_a_session() -> None:
    registry, sink = make(["fastrtc_abc"])
    assert registry.resolve("fastrtc_abc") == "fastrtc_abc"
    assert registry.resolve("fastrtc_abc") == "fastrtc_abc"
    mapped = sink.of_type("connection_mapped")
    assert len(mapped) == 1  # logged once, however often it is used
    assert mapped[0]["level"] == "DEBUG" and mapped[0]["data"]["rule"] == "direct_match"


def test_handler_registry_maps_a_connection_to_its_session() -> None:
    registry, sink = make(["s-1"])
    registry.register("webrtc-9", "s-1")
    assert registry.resolve("webrtc-9") == "s-1"
    assert [r["data"]["rule"] for r in sink.of_type("connection_mapped")] == ["handler_registry"]


def test_unknown_connections_are_rejected_with_what_exists() -> None:
    registry, sink = make(["s-1", "s-2"])
    registry.register("webrtc-1", "s-1")
    assert registry.resolve("webrtc-404") is None
    rejected = sink.of_type("routing_rejected")
    assert rejected[0]["session_id"] == "webrtc-404"
    assert rejected[0]["data"]["active_sessions"] == ["s-1", "s-2"]
    assert rejected[0]["data"]["handlers"] == ["webrtc-1"]


def test_a_mapping_to_a_closed_session_is_not_used() -> None:
    active = ["s-1"]
    sink = ListSink()
    registry = ConnectionRegistry(EventLog(sink, VirtualClock()), lambda: list(active))
    registry.register("webrtc-1", "s-1")
    active.clear()
    assert registry.resolve("webrtc-1") is None
    registry.unregister("webrtc-1")
    assert registry.handlers() == {}

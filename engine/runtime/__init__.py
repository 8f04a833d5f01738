"""The session runtime: events, sessions, their manager, clock, ports, snapshots, trace."""

"""The session runtime: events, sessions and their manager, clock, ports, snapshots, the typed trace."""

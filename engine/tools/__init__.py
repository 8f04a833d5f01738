"""Tools over charts and traces: the sandbox (virtual clock), simulate, paths, replay, timeline."""

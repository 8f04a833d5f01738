"""The python-statemachine kernel, shared by every session of one chart.

Measured here (charts/voice_turn.yaml, python-statemachine 3.2.2): one
machine instance costs about 36 KB and 0.5–1.3 ms to create, which would
break the per-session budget (≤ 30 KB idle, 10,000 sessions in ≤ 5 s). The
kernel's `send` is synchronous (no async callbacks are compiled in), so it
never yields to the event loop mid-step. That makes one instance per chart
safe to share: each session keeps its own configuration (and snapshot), loads
it into the kernel, fires the event, and reads the new configuration back —
XState's "pure transition function" with python-statemachine as the engine.
"""

from __future__ import annotations

from typing import Any

from statemachine import StateChart
from statemachine.orderedset import OrderedSet

from engine.chart.compiler import CompiledChart, StepRecord, history_id, kernel_event


class _Model:
    """The kernel's model: python-statemachine keeps the configuration on `state`."""

    state: Any = None


class Kernel:
    def __init__(self, chart: CompiledChart) -> None:
        self.chart = chart
        self._model = _Model()
        self._model.state = OrderedSet(chart.initial_configuration())
        self.machine: StateChart[Any] = chart.machine_class(model=self._model)
        self._history = {name: history_id(name) for name, info in chart.states.items()
                         if info.history is not None}

    def fire(self, configuration: tuple[str, ...], event: str, step: StepRecord,
             history: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
        """Apply `event` to `configuration`; return the new configuration (root first,
        document order; with parallel regions every active state).

        `history` (state with `history:` → the children it recorded, as the session
        keeps it) is loaded into the shared machine first and updated in place.
        Raises python-statemachine's `TransitionNotAllowed` when no transition
        is enabled (every guard said no), and whatever a guard raises.
        """
        self._model.state = OrderedSet(configuration)
        self._rearm()
        if self._history:
            states_map = self.machine.states_map
            self.machine.history_values.clear()
            for name, recorded in (history or {}).items():
                if name in self._history:
                    self.machine.history_values[self._history[name]] = [
                        states_map[s] for s in recorded if s in states_map]
        self.machine.send(kernel_event(event), step=step)
        if self._history and history is not None:
            for name, hid in self._history.items():
                values = self.machine.history_values.get(hid)
                if values:
                    history[name] = self.chart.ordered(s.id for s in values)
        values = self._model.state
        current = [values] if isinstance(values, str) else list(values)
        if not self.chart.has_parallel:
            leaf = max(current, key=lambda s: self.chart.states[s].depth)
            return self.chart.configuration_of(leaf)
        return self.chart.ordered(current)

    def _rearm(self) -> None:
        """Undo python-statemachine's "the machine has terminated" flag.

        Entering a top-level `final` state stops the machine's engine
        (`running = False`), after which every `send` raises
        `TransitionNotAllowed`. The kernel is shared by every session of the
        chart, so one session reaching its final state would freeze all the
        others; each session's configuration is loaded afresh anyway.
        """
        engine = getattr(self.machine, "_engine", None)
        if engine is not None and not getattr(engine, "running", True):
            engine.running = True
            if hasattr(engine, "_root_parallel_final_pending"):
                engine._root_parallel_final_pending = None

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

from engine.compiler import CompiledChart, StepRecord


class _Model:
    """The kernel's model: python-statemachine keeps the configuration on `state`."""

    state: Any = None


class Kernel:
    def __init__(self, chart: CompiledChart) -> None:
        self.chart = chart
        self._model = _Model()
        self._model.state = OrderedSet(chart.configuration_of(chart.initial_leaf(chart.initial)))
        self.machine: StateChart[Any] = chart.machine_class(model=self._model)

    def fire(self, configuration: tuple[str, ...], event: str, step: StepRecord) -> tuple[str, ...]:
        """Apply `event` to `configuration`; return the new configuration (root first).

        Raises python-statemachine's `TransitionNotAllowed` when no transition
        is enabled (every guard said no), and whatever a guard raises.
        """
        self._model.state = OrderedSet(configuration)
        self._rearm()
        self.machine.send(event, step=step)
        values = self._model.state
        current = [values] if isinstance(values, str) else list(values)
        leaf = max(current, key=lambda s: self.chart.states[s].depth)
        return self.chart.configuration_of(leaf)

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

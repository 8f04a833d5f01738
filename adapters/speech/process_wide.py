"""One instance per process of a native speech engine, made on first use.

Why: espeak-ng, libflite and silero each load a native library and its data once;
making a second instance would load them again (or, for espeak, reset the one
global engine under another caller). `shared()` is safe from any thread.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Self


class ProcessWide:
    """Mixin: `Engine.shared()` is the process's one `Engine()`."""

    _instances: ClassVar[dict[type[Any], Any]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls) -> Self:
        """The process-wide instance, initialised on first use."""
        with ProcessWide._instances_lock:
            instance = ProcessWide._instances.get(cls)
            if instance is None:
                instance = ProcessWide._instances[cls] = cls()
            return instance

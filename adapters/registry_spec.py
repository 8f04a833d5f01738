"""`package.module:factory` → your own `engine.chart.registry.Registry`.

One loader for every command that takes `--registry` (validate, render,
simulate, paths, serve, worker) and for `registry:` in config.yaml. The module
is looked up like `python -m` would from where turnchart was started (the
current directory, then the installed packages), so a package in your project
folder needs no install. `factory` may be a callable returning a Registry or a
Registry itself; `module` alone means `module:registry`. Anything wrong is one
`RegistrySpecError` line naming the spec and the reason.
"""

from __future__ import annotations

import importlib
import os
import sys

from engine.chart.registry import Registry


class RegistrySpecError(ValueError):
    """A registry spec that gives no Registry; the message is one line."""


def load_registry(spec: str) -> Registry:
    module_name, _, attr = spec.strip().partition(":")
    attr = attr or "registry"
    if not module_name or not all(p.isidentifier() for p in module_name.split(".")) \
            or not attr.isidentifier():
        raise RegistrySpecError(f"registry {spec!r}: write package.module:factory "
                                "(e.g. examples.support.registry:registry)")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)        # like `python -m`, after the installed packages
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistrySpecError(f"registry {spec!r}: cannot import {module_name}: {exc} "
                                f"(searched {here} and the installed packages)") from None
    except Exception as exc:
        raise RegistrySpecError(f"registry {spec!r}: importing {module_name} failed: "
                                f"{_one_line(exc)}") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise RegistrySpecError(f"registry {spec!r}: module {module_name} has no {attr!r}"
                                ) from None
    if isinstance(factory, Registry):
        return factory
    if not callable(factory):
        raise RegistrySpecError(f"registry {spec!r}: {attr} is a {type(factory).__name__}, "
                                "not a Registry or a function returning one")
    try:
        registry = factory()
    except Exception as exc:
        raise RegistrySpecError(f"registry {spec!r}: {attr}() failed: {_one_line(exc)}"
                                ) from None
    if not isinstance(registry, Registry):
        raise RegistrySpecError(f"registry {spec!r}: {attr}() returned a "
                                f"{type(registry).__name__}, not an engine.chart.registry.Registry")
    return registry


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"

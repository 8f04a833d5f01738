"""Typed chart data (issue 16 §3): `data:` fields, `set:` on transitions, guards with arguments.

A chart may declare typed fields with defaults:

    data:
      party_size: int                       # default: the type's zero value (0)
      misunderstandings: {type: int, default: 0}
      date: {type: str, default: ""}

A transition may `set:` fields, from the event's payload or from constants; there
are no expressions and nothing is evaluated:

    set: {party_size: {from: size}, confirmed: true, misunderstandings: {add: 1}}

and guards may take arguments, each guard declaring its parameter types (`PARAMS`
below for the built-ins, `Registry.guard(params=...)` for others) so the
validator checks every argument:

    guard: {name: field_equals, args: {field: misunderstandings, value: 2}}

Data is session state: it is in the snapshot (`context["data"]`, so a resumed
session keeps it), guards see it as `GuardInput.context`, and each change is a
`data_changed` log line. Pure: no I/O, no imports beyond the engine's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.chart.registry import GuardInput, Registry
from engine.chart.spec import DATA_TYPES, DataFieldSpec, SetAdd, SetFrom, SetValue

ZERO: dict[str, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False}

# Parameter kinds a guard may declare:
#   "field"         the name of a declared data field
#   "number_field"  the name of an int or float data field
#   "value"         a constant of the type of the guard's `field` argument
#   "str" | "int" | "float" | "bool" | "number"   a constant of that type
PARAM_KINDS = ("field", "number_field", "value", "str", "int", "float", "bool", "number")


def defaults(fields: Mapping[str, DataFieldSpec]) -> dict[str, Any]:
    """A fresh session's data: every field at its default (or its type's zero)."""
    return {name: ZERO[f.type] if f.default is None else coerce(f.type, f.default)
            for name, f in fields.items()}


def coerce(type_name: str, value: Any) -> Any:
    """An int stored in a float field becomes a float; everything else as it is."""
    if type_name == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def fits(type_name: str, value: Any) -> bool:
    """Whether a constant may be stored in a field of `type_name` (no bool-as-int)."""
    if isinstance(value, bool):
        return type_name == "bool"
    if type_name == "float":
        return isinstance(value, int | float)
    return isinstance(value, DATA_TYPES[type_name])


def payload_fits(type_name: str, payload_type: str) -> bool:
    """Whether a payload field of `payload_type` (e.g. `int`, `str?`) may set a field."""
    base = payload_type.rstrip("?")
    return base == type_name or (type_name == "float" and base == "int")


def apply_sets(assignments: Mapping[str, SetValue], data: dict[str, Any],
               fields: Mapping[str, DataFieldSpec], payload: Mapping[str, Any]
               ) -> dict[str, tuple[Any, Any]]:
    """Apply one transition's `set:` to `data` in place; return field → (old, new) for
    the fields whose value changed. A `{from: F}` whose optional payload field is
    absent (or null) leaves the field as it is."""
    changed: dict[str, tuple[Any, Any]] = {}
    for name, how in assignments.items():
        kind = fields[name].type
        old = data.get(name)
        if isinstance(how, SetFrom):
            if payload.get(how.from_) is None:
                continue
            new = coerce(kind, payload[how.from_])
        elif isinstance(how, SetAdd):
            new = coerce(kind, (old or 0) + how.add)
        else:
            new = coerce(kind, how)
        data[name] = new
        if new != old or type(new) is not type(old):
            changed[name] = (old, new)
    return changed


# ----------------------------------------------------------------- built-in guards

def _field(inp: GuardInput) -> tuple[bool, Any]:
    name = inp.args.get("field")
    if not isinstance(name, str) or name not in inp.context:
        return False, None
    return True, inp.context[name]


def field_equals(inp: GuardInput) -> bool:
    """The data field `field` equals `value`."""
    ok, current = _field(inp)
    return ok and current == inp.args.get("value")


def field_at_least(inp: GuardInput) -> bool:
    """The number field `field` is at least `value`."""
    ok, current = _field(inp)
    value = inp.args.get("value")
    return ok and isinstance(current, int | float) and isinstance(value, int | float) \
        and current >= value


def field_below(inp: GuardInput) -> bool:
    """The number field `field` is below `value`."""
    ok, current = _field(inp)
    value = inp.args.get("value")
    return ok and isinstance(current, int | float) and isinstance(value, int | float) \
        and current < value


def field_is_set(inp: GuardInput) -> bool:
    """The data field `field` holds something other than its type's zero value
    (a non-empty text, a non-zero number, true)."""
    ok, current = _field(inp)
    return ok and current not in ("", 0, 0.0, False, None)


BUILTIN_GUARDS: dict[str, tuple[Any, dict[str, str]]] = {
    "field_equals": (field_equals, {"field": "field", "value": "value"}),
    "field_at_least": (field_at_least, {"field": "number_field", "value": "number"}),
    "field_below": (field_below, {"field": "number_field", "value": "number"}),
    "field_is_set": (field_is_set, {"field": "field"}),
}
"""name → (function, parameter name → kind): guards every registry has."""


def register_builtin_guards(registry: Registry) -> None:
    """Add the data guards above to a registry (every `Registry()` calls this)."""
    for name, (fn, params) in BUILTIN_GUARDS.items():
        registry.guard(name, params=params)(fn)


def check_argument(kind: str, value: Any, fields: Mapping[str, DataFieldSpec],
                   field_type: str | None) -> str | None:
    """Why `value` does not fit a parameter of `kind` (None when it does)."""
    if kind in ("field", "number_field"):
        if not isinstance(value, str) or value not in fields:
            return "unknown data field"
        if kind == "number_field" and fields[value].type not in ("int", "float"):
            return f"data field '{value}' is {fields[value].type}, not a number"
        return None
    if kind == "value":
        if field_type is None:
            return None   # the field argument is wrong already
        return None if fits(field_type, value) else f"expected {_a(field_type)}"
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "expected a number"
    return None if fits(kind, value) else f"expected {_a(kind)}"


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name == "int" else f"a {type_name}"

"""No module outside the trace and the JSON-log listener formats or parses log lines by
their `event_type` string (issue 15): everything else reads typed events
(engine/runtime/trace.py). A `"state_transition"`-style literal of a kind with a class in
engine/runtime/trace.py, anywhere in engine/, adapters/ or benchmarks/, is a failure.

(The browser pages under adapters/server/static/ read the JSON lines the server
streams to them: that is the log format as public API, not Python code.)"""

from __future__ import annotations

import re
from pathlib import Path

from engine.runtime.trace import KINDS

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {Path("engine/runtime/trace.py"), Path("engine/runtime/logs.py")}
SAME_WORD = {
    # `turnchart paths` names a kind of problem after the line kind (docs/paths.md).
    (Path("engine/tools/paths.py"), '"contract_violation"'),
}
KIND_NAMES = "|".join(sorted(KINDS, key=len, reverse=True))
LITERAL = re.compile(rf"""["']({KIND_NAMES})["']""")


def offenders() -> list[str]:
    found = []
    for folder in ("engine", "adapters", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in ALLOWED:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for match in LITERAL.finditer(line):
                    if (relative, match.group(0)) not in SAME_WORD:
                        found.append(f"{relative}:{number}: {match.group(0)}")
    return found


def test_no_event_type_literals_outside_the_trace() -> None:
    assert offenders() == []


def test_the_check_sees_a_literal() -> None:
    assert LITERAL.search('if r["event_type"] == "state_transition":')
    assert LITERAL.search("kind in ('event_stale', 'x')")
    assert not LITERAL.search('"state_transitions"')

"""docs/flows.md stays true: each mistake it shows is made again in a copy of
examples/booking/chart.yaml, and `turnchart validate` prints exactly the lines
the page quotes (file name aside); the line counts it gives are the files'."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "examples" / "booking" / "chart.yaml"
DOC = ROOT / "docs" / "flows.md"
TURNCHART = str(Path(sys.executable).with_name("turnchart"))

HOURS_EXIT = """            tools: [continue_booking]
            on:
              continue_booking: BOOKING
"""
MISTAKES = {
    "typo_target": [("set_date: {target: ASK_TIME,", "set_date: {target: ASK_TIEM,")],
    "unhandled_tool": [("tools: [set_party_size]", "tools: [set_party_size, set_time]")],
    "undeclared_tool": [("tools: [confirm_booking]", "tools: [confirm_bookng]")],
    "dead_end": [(HOURS_EXIT, "")],
    "bad_type": [("set_party_size: {payload: {size: int},",
                  "set_party_size: {payload: {size: integer},")],
    "bad_set": [("set: {party_size: {from: size}}", "set: {party_size: {from: heard}}"),
                ("set_party_size: {payload: {size: int},",
                 "set_party_size: {payload: {size: int, heard: str},")],
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_the_page_quotes_what_validate_prints(name: str, tmp_path: Path) -> None:
    text = CHART.read_text(encoding="utf-8")
    for old, new in MISTAKES[name]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    broken = tmp_path / f"{name}.yaml"
    broken.write_text(text, encoding="utf-8")
    done = subprocess.run([TURNCHART, "validate", "--registry",
                           "examples.booking.registry:registry", str(broken)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    printed = [line.replace(str(broken), broken.name) for line in done.stdout.splitlines()]
    page = DOC.read_text(encoding="utf-8")
    assert printed and all(line in page for line in printed), printed


def _code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines()
               if line.strip() and not line.strip().startswith("#"))


def _python_code_lines(text: str) -> int:
    tree = ast.parse(text)
    docs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef) and \
                ast.get_docstring(node):
            first = node.body[0]
            docs.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(1 for i, line in enumerate(text.splitlines(), 1)
               if i not in docs and line.strip() and not line.strip().startswith("#"))


def test_the_line_counts_are_the_files() -> None:
    page = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```(\w*)\n(.*?)```", page, re.S)
    pipecat_yaml = [b for lang, b in blocks if lang == "yaml"][1]
    pipecat_py = next(b for lang, b in blocks if lang == "python")
    assert "| 67 lines (data 5, tool events 7, the FLOW region 55) | 65 lines |" in page
    assert _code_lines(pipecat_yaml) == 65
    assert "| 37 lines: 4 guards" in page and "| 34 lines: 6 handlers" in page
    assert _python_code_lines(pipecat_py) == 34
    registry = (ROOT / "examples" / "booking" / "registry.py").read_text(encoding="utf-8")
    assert _python_code_lines(registry) == 37
    chart = CHART.read_text(encoding="utf-8").splitlines()
    start = chart.index("      FLOW:                       # the booking itself")
    assert len(chart) == 157 and _code_lines("\n".join(chart[start:])) == 55
    data = chart[chart.index("data:"):chart.index("events:")]
    events = chart[chart.index("events:"):chart.index("states:")]
    tools = [line for line in events if re.match(r"  [a-z_]+: \{.*description: ", line)]
    assert _code_lines("\n".join(data)) == 5 and len(tools) == 7

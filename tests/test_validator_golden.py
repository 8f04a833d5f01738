"""Golden tests: each invalid chart gives exactly the lines in its `.expected` file.

`tests/golden/invalid/<CODE>_<slug>.yaml` is a small chart with one mistake;
`<same name>.expected` holds the exact output, one `PATH:LINE:COL: CODE message`
per line, errors first and then warnings, each group in file order (what
`turnchart validate` prints). PATH is the bare file name. A warning code
starts with W; a chart with only warnings compiles.

When a case changes on purpose, run it, read the new output, check the line
and column by hand against the YAML, and only then update the `.expected`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.chart.chart import compile_text
from engine.chart.compiler import CompiledChart
from engine.chart.errors import ChartErrors

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
INVALID = sorted((GOLDEN / "invalid").glob("*.yaml"))
VALID = sorted((GOLDEN / "valid").glob("*.yaml"))
ERRORS_DOC = ROOT / "docs" / "errors.md"
LINE_RE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>[EW]\d{3}) \S.*$")
CASE_RE = re.compile(r"^(?P<code>[EW]\d{3})_[a-z0-9_]+$")


def render(path: Path) -> tuple[list[str], CompiledChart | None]:
    """The output lines for one chart file, and the compiled chart when it compiled."""
    text = path.read_text(encoding="utf-8")
    try:
        compiled = compile_text(text, path.name)
    except ChartErrors as exc:
        return [str(e) for e in exc.errors] + [str(w) for w in exc.warnings], None
    return [str(w) for w in compiled.warnings], compiled


def expected_lines(path: Path) -> list[str]:
    return path.with_suffix(".expected").read_text(encoding="utf-8").splitlines()


def case_code(path: Path) -> str:
    match = CASE_RE.match(path.stem)
    assert match, f"golden case names are <CODE>_<slug>.yaml, got {path.name}"
    return match.group("code")


def documented_codes() -> dict[str, str]:
    """Code → its table row in docs/errors.md."""
    rows: dict[str, str] = {}
    for line in ERRORS_DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*`?([EW]\d{3})`?\s*\|", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} documented twice"
            rows[match.group(1)] = line
    return rows


def test_there_are_golden_cases() -> None:
    assert len(INVALID) >= 30
    assert VALID


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_golden_output(path: Path) -> None:
    actual, compiled = render(path)
    expected = expected_lines(path)
    assert actual == expected, "\n".join(["actual output:", *actual])
    code = case_code(path)
    matches = [LINE_RE.match(line) for line in expected]
    for line, match in zip(expected, matches, strict=True):
        assert match, f"not a PATH:LINE:COL: CODE message line: {line!r}"
        assert match.group("path") == path.name
        assert int(match.group("line")) >= 1 and int(match.group("col")) >= 1
    codes = [m.group("code") for m in matches if m]
    assert code in codes, f"{path.name} does not produce {code}"
    if code.startswith("W"):
        assert compiled is not None, "a chart with only warnings must compile"
        assert all(c.startswith("W") for c in codes)
    else:
        assert compiled is None, "an error case must not compile"


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_golden_case_is_one_mistake_away_from_the_minimal_chart(path: Path) -> None:
    """Each case starts from the minimal valid chart (so it shows exactly one mistake)."""
    base = set((GOLDEN / "valid" / "minimal.yaml").read_text(encoding="utf-8").splitlines())
    case = {line for line in path.read_text(encoding="utf-8").splitlines()
            if not line.startswith("#")}
    assert len(base - case) <= 4 and len(case - base) <= 6, \
        f"{path.name} drifted from minimal.yaml: -{sorted(base - case)} +{sorted(case - base)}"


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_golden_charts_compile_cleanly(path: Path) -> None:
    lines, compiled = render(path)
    assert compiled is not None
    assert lines == []


def test_warnings_do_not_fail_compile() -> None:
    for path in INVALID:
        if case_code(path).startswith("W"):
            compiled = compile_text(path.read_text(encoding="utf-8"), path.name)
            assert compiled.warnings
            assert all(w.severity == "warning" for w in compiled.warnings)


def test_every_documented_code_has_a_golden_case_and_back() -> None:
    documented = documented_codes()
    golden = {case_code(p) for p in INVALID}
    # A documented code may go without a golden case only if its row says so
    # (E190: the internal safety net that no chart reaching it is known for).
    exempt = {code for code, row in documented.items() if "no golden case" in row}
    assert exempt <= {"E190"}, f"only E190 may be exempt, got {sorted(exempt)}"
    assert sorted(set(documented) - golden - exempt) == [], "documented codes without a case"
    assert sorted(golden - set(documented)) == [], "golden cases whose code is undocumented"
    assert not (exempt & golden), "a code marked 'no golden case' has one: update the docs"


def test_documented_examples_match_the_line_format() -> None:
    """Each row's example output line is in the `PATH:LINE:COL: CODE message` format."""
    for code, row in documented_codes().items():
        examples = re.findall(r"`([^`]*: [EW]\d{3} [^`]*)`", row)
        assert examples, f"row for {code} has no example output line"
        for example in examples:
            match = LINE_RE.match(example)
            assert match and match.group("code") == code, example

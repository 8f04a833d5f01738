"""Tests write only to temp dirs and read nothing outside the repository (issue 13 §2):
no test module names a tracked picture or a path beside the checkout."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = sorted((ROOT / "tests").rglob("*.py"))
THIS = Path(__file__).resolve()


def offenders(pattern: str) -> list[str]:
    found = []
    for path in TESTS:
        if path.resolve() == THIS:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_no_test_writes_the_readme_pictures() -> None:
    # scripts/screenshots copies the browser tests' screenshots into docs/img on demand
    assert offenders(r'["\']docs/img|"docs"\s*/\s*"img"') == []


def test_no_test_reads_beside_the_checkout() -> None:
    assert offenders(r'ROOT\.parent\b|\.\./shared|"shared"\s*/') == []

"""requirements.lock is what every machine installs: it must parse, pin every dependency
pyproject.toml names (runtime, test tools, extras, build backend) with hashes, and match the
environment the tests run in (scripts/_setup.sh rebuilds .venv when it does not)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def _lockcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "scripts" / "_lockcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return str(_lockcheck().canonical(match.group(0)))


def _entries() -> list[tuple[str, str, list[str]]]:
    """(name, version, hashes) for every pinned block of the lock, markers ignored."""
    entries: list[tuple[str, str, list[str]]] = []
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text(encoding="utf-8")):
        head = block.splitlines()[0]
        if head.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", head)
        assert match, f"requirements.lock: cannot parse {head!r}"
        hashes = re.findall(r"--hash=sha256:(\w{64})", block)
        entries.append((_name(match.group(1)), match.group(2), hashes))
    return entries


def test_every_dependency_of_pyproject_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = {_name(r) for r in project["project"]["dependencies"]}
    for extra in ("test", "otel"):
        wanted |= {_name(r) for r in project["project"]["optional-dependencies"][extra]}
    wanted |= {_name(r) for r in project["build-system"]["requires"]}
    entries = _entries()
    pinned = {name for name, _version, _hashes in entries}
    missing = wanted - pinned
    assert missing == set(), f"the lock does not pin {missing}: run scripts/lock"
    unhashed = [name for name, _version, hashes in entries if not hashes]
    assert unhashed == [], f"pins without hashes: {unhashed}"


def test_the_environment_running_the_tests_is_the_locked_one() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "_lockcheck.py"), str(LOCK)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_lockcheck_reports_a_version_that_differs(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "pyyaml==0.0.1 \\\n    --hash=sha256:" + "0" * 64 + "\n"
        "nothing-installed-by-this-name==1.0 ; python_version >= '3.0' \\\n"
        "    --hash=sha256:" + "1" * 64 + "\n"
        "never-on-this-platform==1.0 ; sys_platform == 'win32' and sys_platform == 'linux'\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "_lockcheck.py"), str(lock)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    assert "pyyaml: lock 0.0.1, installed 6." in result.stderr
    assert "nothing-installed-by-this-name: lock 1.0, installed nothing" in result.stderr
    assert "never-on-this-platform" not in result.stderr

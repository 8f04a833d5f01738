"""Rough edges of the `turnchart` command line (issue 13 §3), run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("turnchart")
CHART = ROOT / "charts" / "voice_turn.yaml"
TUTORIAL = ROOT / "docs" / "tutorial" / "voice_turn_confirming.yaml"


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def recording(tmp_path: Path) -> Path:
    """A small log of one call, made by `turnchart simulate` (what `replay` reads)."""
    log = tmp_path / "calls.jsonl"
    result = run("simulate", str(ROOT / "scenarios" / "barge_in.yaml"), "--out", str(log))
    assert result.returncode == 0, result.stderr
    return log


# --------------------------------------------------------------------------- 1. closed pipe


@pytest.mark.parametrize("command", [
    ["paths", str(TUTORIAL)],
    ["paths", str(TUTORIAL), "--format", "json"],
    ["validate", "--format", "json", str(CHART)],
    ["render", str(CHART)],
    ["replay", "LOG", "--format", "json"],
    ["replay", "LOG"],
], ids=lambda c: " ".join(c[:1] + c[2:]))
def test_a_closed_pipe_ends_the_command_quietly(command: list[str], tmp_path: Path) -> None:
    """`turnchart paths … | head -1`: the reader is gone before turnchart writes (the read
    end is closed before it starts, so every write fails): no traceback, exit 141 as a
    shell reports for a Unix tool ended by SIGPIPE."""
    if "LOG" in command:
        command[command.index("LOG")] = str(recording(tmp_path))
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([str(EXE), *command], cwd=ROOT, stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode == 141, result.stderr


# --------------------------------------------------------------------------- 6. --version


def test_version_prints_the_installed_version() -> None:
    import tomllib
    want = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"turnchart {want['project']['version']}\n"

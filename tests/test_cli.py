"""The `turnchart` command line, run as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "voice_turn.yaml"


def turnchart(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("turnchart")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def typo_chart(tmp_path: Path) -> tuple[Path, int, int]:
    text = CHART.read_text(encoding="utf-8")
    path = tmp_path / "typo.yaml"
    path.write_text(text.replace("playback_done: LISTENING", "playback_done: LISTENNING"))
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if "LISTENNING" in line:
            return path, number, line.index("LISTENNING") + 1
    raise AssertionError("typo not written")


def test_validate_ok() -> None:
    result = turnchart("validate", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "ok" in result.stderr


def test_validate_points_at_the_typo_and_suggests_the_name(tmp_path: Path) -> None:
    path, line, col = typo_chart(tmp_path)
    result = turnchart("validate", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:{line}:{col}: E130 unknown target state 'LISTENNING' (did you mean 'LISTENING'?)"]


def test_validate_json_for_editors(tmp_path: Path) -> None:
    path, line, col = typo_chart(tmp_path)
    result = turnchart("validate", str(CHART), str(path), "--format", "json")
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["valid"] is False
    good, bad = body["files"]
    assert good["valid"] is True and good["errors"] == []
    assert bad["errors"][0] | {"path": "x"} == {
        "path": "x", "line": line, "col": col, "code": "E130", "severity": "error",
        "message": "unknown target state 'LISTENNING' (did you mean 'LISTENING'?)"}


def test_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = turnchart("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_usage_error_exit_code() -> None:
    assert turnchart("validate").returncode == 2
    assert turnchart("render", str(CHART), "--format", "gif").returncode == 2


def test_render_user_chart_to_file(tmp_path: Path) -> None:
    user_chart = ROOT / "tests" / "charts" / "nested_example.yaml"
    out = tmp_path / "chart.mmd"
    result = turnchart("render", str(user_chart), "--format", "mermaid", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "stateDiagram-v2" in out.read_text()
    assert "CONFIRMING" in out.read_text()


def test_render_svg_and_json() -> None:
    svg = turnchart("render", str(CHART), "--format", "svg")
    assert svg.returncode == 0 and "<svg" in svg.stdout
    data = json.loads(turnchart("render", str(CHART), "--format", "json").stdout)
    assert data["name"] == "voice_turn"
    assert {"source": "SPEAKING", "event": "barge_in", "target": "INTERRUPT", "guards": [],
            "do": [], "order": 0} in data["transitions"]


def test_render_invalid_chart_exits_1(tmp_path: Path) -> None:
    path, _, _ = typo_chart(tmp_path)
    result = turnchart("render", str(path))
    assert result.returncode == 1
    assert "E130" in result.stdout


def test_registry_option_checks_user_behaviours(tmp_path: Path) -> None:
    (tmp_path / "my_behaviours.py").write_text(
        "from engine.runtime.behaviours import default_registry\n"
        "def registry():\n"
        "    reg = default_registry()\n"
        "    @reg.effect()\n"
        "    async def confirm_action(ctx):\n"
        "        return None\n"
        "    return reg\n")
    chart = tmp_path / "c.yaml"
    chart.write_text(CHART.read_text().replace(
        "enter: [cancel_tts, cancel_filler]\n        after: {0ms: ready_after_interrupt}",
        "enter: [cancel_tts, confirm_action]\n        after: {0ms: ready_after_interrupt}"))
    assert "confirm_action" in chart.read_text()
    plain = turnchart("validate", str(chart))
    assert plain.returncode == 1 and "E141 unregistered effect 'confirm_action'" in plain.stdout
    import os
    env_path = os.environ.get("PYTHONPATH", "")
    exe = Path(sys.executable).with_name("turnchart")
    custom = subprocess.run([str(exe), "validate", str(chart), "--registry",
                             "my_behaviours:registry"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}:{env_path}"})
    assert custom.returncode == 0, custom.stdout + custom.stderr

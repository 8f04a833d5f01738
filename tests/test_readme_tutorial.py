"""The README tutorial can be followed: every `$ ` command of its ```sh blocks runs
(in a temporary folder that sees the repository's docs/, charts/ and scenarios/)
and prints what the README shows. A `…` line stands for any number of lines; the
long-running `turnchart serve` is started on a free port, asked for /health and
stopped. Step 4 replays docs/tutorial/calls.jsonl, a real recording made by
scripts/record-tutorial."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.webrtc_client import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
MARK = "@@next-command@@"
ELIDED = "…"


def tutorial_commands() -> list[list[tuple[str, list[str]]]]:
    """Per ```sh block of the Tutorial section: (command, expected output lines)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Tutorial"):]
    section = section[:section.index("\n## ", 1)]
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        commands: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
        if commands:
            blocks.append(commands)
    return blocks


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line, trailing blanks ignored; `…` matches any run of lines."""
    if not expected:
        return not actual
    if expected[0].strip() == ELIDED:
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0].rstrip() == actual[0].rstrip() \
        and matches(expected[1:], actual[1:])


def workdir(tmp: Path) -> Path:
    for name in ("docs", "charts", "scenarios"):
        (tmp / name).symlink_to(ROOT / name)
    return tmp


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNCHART_")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def run_block(commands: list[tuple[str, str]], cwd: Path) -> list[list[str]]:
    """Run the commands in one shell (so `echo $?` sees the one before); each one's
    stdout and stderr together, as a terminal shows them."""
    script = ["set +e", "__rc=0"]
    for command, _ in commands:
        script += [f'echo "{MARK}"', "(exit $__rc)", f"{{ {command}\n}} 2>&1", "__rc=$?"]
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.stderr == "", done.stderr
    return [part.splitlines() for part in done.stdout.split(MARK + "\n")[1:]]


def serve_and_stop(command: str, cwd: Path) -> dict[str, object]:
    """`turnchart serve …` as the README writes it, on a free port: its /health."""
    port = free_port()
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd,
                            env={**environment(), "TURNCHART_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                health: dict[str, object] = httpx.get(f"http://127.0.0.1:{port}/health",
                                                      timeout=1).json()
                charts = httpx.get(f"http://127.0.0.1:{port}/charts", timeout=5).json()
                return {**health, "chart_paths": [c["path"] for c in charts["charts"]]}
            except (httpx.HTTPError, ValueError):
                time.sleep(0.2)
        raise AssertionError(f"{command!r} did not answer /health within 90 s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


def test_the_tutorial_has_what_this_test_runs() -> None:
    commands = [c for block in tutorial_commands() for c, _ in block]
    assert any(c.startswith("turnchart replay docs/tutorial/calls.jsonl") for c in commands)
    assert sum(c.startswith("turnchart ") for c in commands) >= 7, commands
    assert matches(["a", ELIDED, "z"], ["a", "b", "c", "z"]) and matches([ELIDED], [])
    assert not matches(["a", ELIDED, "z"], ["a", "b"]) and not matches(["a"], ["b"])


def test_every_tutorial_command_prints_what_the_readme_shows(tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    ran = 0
    for block in tutorial_commands():
        serving = [(c, out) for c, out in block if c.startswith("turnchart serve")]
        others = [(c, out) for c, out in block if not c.startswith("turnchart serve")]
        assert all(not out for _, out in serving), "a serve command shows no output"
        outputs = run_block(others, cwd) if others else []
        for (command, expected), actual in zip(others, outputs, strict=True):
            assert matches(expected, actual), (
                f"$ {command}\n--- README shows:\n" + "\n".join(expected)
                + "\n--- it printed:\n" + "\n".join(actual))
            ran += 1
        for command, _ in serving:
            health = serve_and_stop(command, cwd)
            assert health["status"] == "ok" and health["voice"] == "running", health
            assert [Path(p).name for p in health["chart_paths"]] == \
                ["voice_turn_confirming.yaml"], health          # type: ignore[attr-defined]
            ran += 1
    assert ran >= 9
    assert (cwd / "confirming.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_the_shipped_recording_is_a_real_server_log() -> None:
    """Made by scripts/record-tutorial against `turnchart serve`: the three calls the
    README describes, with what the live side logged (transport, speech, barge-in)."""
    records = [json.loads(line) for line in
               (ROOT / "docs" / "tutorial" / "calls.jsonl").read_text().splitlines()]
    by_session: dict[str, list[dict[str, object]]] = {}
    for r in records:
        by_session.setdefault(str(r["session_id"]), []).append(r)
    assert set(by_session) == {"-", "s1", "s2", "s3"}
    assert any(r["event_type"] == "server_log" for r in by_session["-"])   # uvicorn's lines

    def moves(session: str) -> list[str]:
        return [f"{r['data']['from']} → {r['data']['to']}"              # type: ignore[index]
                for r in by_session[session] if r["event_type"] == "state_transition"]

    assert moves("s1")[-2:] == ["SPEAKING → LISTENING", "LISTENING → IDLE"]
    assert "SPEAKING → INTERRUPT" in moves("s2")
    assert any(r["event_type"] == "barge_in_detected" for r in by_session["s2"])
    assert moves("s3")[-1] == "SPEAKING → IDLE"          # hung up in the middle of the answer
    assert all(str(ROOT) not in json.dumps(r) for r in records)

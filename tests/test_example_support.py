"""Serving your own behaviours: `turnchart serve --registry module:factory` (and
`registry:` in config.yaml, TURNCHART_REGISTRY) with the support line of
examples/support, end to end in a real process with a WebSocket call; a bad
spec is one line at start (serve and worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.config import Settings, apply_env, load_settings
from adapters.registry_spec import RegistrySpecError, load_registry
from engine.chart.chart import load_chart
from examples.support.registry import FAQError, best_answer, build_registry, load_faq
from tests.support.live_clients import WebSocketCaller
from tests.support.waiting import wait_for
from tests.support.webrtc_client import free_port, json_records

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "support"
SPEC = "examples.support.registry:registry"
TURNCHART = str(Path(sys.executable).with_name("turnchart"))


Server = tuple[subprocess.Popen[bytes], str, Path]


def serve(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = tmp / "server.log"
    with log.open("wb") as out:          # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([TURNCHART, "serve", "--port", str(port), *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("server exited:\n" + log.read_text()[-3000:])
        try:
            if httpx.get(f"{base}/health", timeout=1).json().get("voice") == "running":
                return proc, base, log
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start:\n" + log.read_text()[-3000:])


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def moves(log: Path, session: str) -> list[str]:
    return [f"{r['data']['from']} → {r['data']['to']}" for r in json_records(log)
            if r["event_type"] == "state_transition" and r["session_id"] == session]


def test_the_support_line_is_served_with_its_own_behaviours(tmp_path: Path) -> None:
    proc, base, log = serve(tmp_path, "--registry", SPEC,
                            "--config", str(EXAMPLE / "config.yaml"))
    try:
        charts = httpx.get(f"{base}/charts").json()["charts"]
        assert [c["name"] for c in charts] == ["support_line"] and not charts[0]["errors"]
        caller = WebSocketCaller(base, "support-1")
        try:
            assert wait_for(lambda: moves(log, "support-1") == ["IDLE → LISTENING"], 10)
            caller.say_text("When are you open on Monday?")         # in the FAQ
            assert wait_for(lambda: moves(log, "support-1")[-1:] == ["ANSWERING → LISTENING"], 30)
            frames = caller.audio_frames
            assert frames > 20                                        # the answer was spoken
            caller.say_text("my toaster sings at night")             # not understood: once
            assert wait_for(lambda: moves(log, "support-1")[-1:] ==
                            ["ASKING_AGAIN → LISTENING_AGAIN"], 30)
            caller.say_text("it hums like a choir")                  # twice in a row: a person
            assert wait_for(lambda: moves(log, "support-1")[-1:] == ["HANDING_OVER → WITH_AGENT"],
                            30)
            assert caller.audio_frames > frames and caller.errors == []
        finally:
            caller.close()
        assert wait_for(lambda: any(r["event_type"] == "session_closed"
                                    for r in json_records(log)), 10)
    finally:
        stop(proc)
    records = [r for r in json_records(log) if r["session_id"] == "support-1"]
    assert moves(log, "support-1") == [
        "IDLE → LISTENING", "LISTENING → ANSWERING", "ANSWERING → LISTENING",
        "LISTENING → ASKING_AGAIN", "ASKING_AGAIN → LISTENING_AGAIN",
        "LISTENING_AGAIN → HANDING_OVER", "HANDING_OVER → WITH_AGENT", "WITH_AGENT → IDLE"]
    lookups = [(r["data"]["topic"], r["data"]["answer"]) for r in records
               if r["event_type"] == "faq_lookup"]
    assert [topic for topic, _ in lookups] == ["opening_hours"]
    assert lookups[0][1].startswith("We are open from eight")
    assert [r["data"]["heard"] for r in records if r["event_type"] == "misunderstood"] == \
        ["my toaster sings at night", "it hums like a choir"]
    [handover] = [r for r in records if r["event_type"] == "handed_over"]
    assert handover["level"] == "WARNING" and handover["data"]["heard"] == "it hums like a choir"
    assert not [r for r in json_records(log) if r["level"] == "ERROR"]


def test_registry_from_the_config_file_or_the_environment(tmp_path: Path) -> None:
    assert load_settings(EXAMPLE / "config.yaml").registry == SPEC
    assert apply_env(Settings(), {"TURNCHART_REGISTRY": SPEC}).registry == SPEC
    config = tmp_path / "config.yaml"
    config.write_text(f"charts: [{EXAMPLE / 'support_line.yaml'}]\n"
                      "voice: {chart: support_line}\n")
    proc, base, _ = serve(tmp_path, "--config", str(config), env={"TURNCHART_REGISTRY": SPEC})
    try:
        [chart] = httpx.get(f"{base}/charts").json()["charts"]
        assert chart["name"] == "support_line" and chart["errors"] == []
    finally:
        stop(proc)


@pytest.mark.parametrize(("spec", "says"), [
    ("examples.support.registry:nope", "module examples.support.registry has no 'nope'"),
    ("no_such_package.registry:registry", "cannot import no_such_package.registry"),
    ("not a spec", "write package.module:factory"),
    ("examples.support.registry:FAQ_PATH", "not a Registry or a function returning one"),
])
@pytest.mark.parametrize("command", [["serve", "--port", "1"],
                                     ["worker", "--redis", "redis://127.0.0.1:1/0"]])
def test_a_bad_registry_spec_is_one_line_at_start(spec: str, says: str,
                                                  command: list[str]) -> None:
    started = time.monotonic()
    done = subprocess.run([TURNCHART, *command, "--registry", spec], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert done.stderr.startswith(f"turnchart: registry '{spec}': ")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert time.monotonic() - started < 30


def test_the_loader_explains_what_it_got(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_behaviours.py").write_text(
        "from engine.runtime.behaviours import default_registry\n"
        "ready = default_registry()\n"
        "def broken():\n    raise RuntimeError('no FAQ here')\n"
        "def wrong():\n    return 42\n")
    monkeypatch.chdir(tmp_path)          # found from the current directory, like python -m
    assert load_registry("my_behaviours:ready").names("activity") >= {"respond", "speak"}
    with pytest.raises(RegistrySpecError, match=r"broken\(\) failed: RuntimeError: no FAQ here"):
        load_registry("my_behaviours:broken")
    with pytest.raises(RegistrySpecError, match=r"wrong\(\) returned a int, not an engine"):
        load_registry("my_behaviours:wrong")


def test_the_faq_answers_by_whole_words_and_a_bad_faq_names_the_entry(tmp_path: Path) -> None:
    faq = load_faq()
    assert best_answer(faq, "When do you OPEN?").topic == "opening_hours"       # type: ignore[union-attr]
    assert best_answer(faq, "I want to send back my parcel").topic in ("returns", "delivery")  # type: ignore[union-attr]
    assert best_answer(faq, "reopening soon") is None                     # not a whole word
    bad = tmp_path / "faq.yaml"
    bad.write_text("- {topic: a, ask: [x], answer: y}\n- {topic: b, ask: [], answer: z}\n")
    with pytest.raises(FAQError, match=r"faq\.yaml: entry 2 must have"):
        build_registry(bad)
    registry = build_registry()
    chart = load_chart(EXAMPLE / "support_line.yaml", registry)
    assert chart.name == "support_line"
    assert {"understood"} <= registry.names("guard")
    assert {"answer_from_faq", "ask_again", "hand_over"} <= registry.names("activity")
    assert "note_misunderstanding" in registry.names("effect")


def test_paths_reaches_every_transition_and_guard_outcome_of_the_support_line() -> None:
    """`turnchart paths` on the example (issue 13 §4 with docs/paths.md): the guard
    `understood` takes the caller's words, and its examples come from the FAQ, so
    every row and both outcomes of every guard are reached, none of them forced."""
    done = subprocess.run([TURNCHART, "paths", str(EXAMPLE / "support_line.yaml"),
                           "--registry", SPEC], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    head = done.stdout.splitlines()[0]
    assert "transitions 16/16 (100%), guard outcomes 12/12 (100%)" in head, head
    assert head.endswith(", 0 problem(s)") and "forced" not in done.stdout


def test_the_understood_guard_and_its_examples_follow_the_faq(tmp_path: Path) -> None:
    from engine.chart.registry import GuardInput
    from examples.support.registry import understood_examples

    registry = build_registry()
    understood = registry.get("guard", "understood").fn
    examples = registry.guard_examples("understood")
    for outcome in (True, False):
        [payload] = examples[outcome]
        assert understood(GuardInput("stt_final", payload)) is outcome, payload
    assert understood(GuardInput("stt_final", {"text": "When are you OPEN?"})) is True
    own = tmp_path / "faq.yaml"
    own.write_text("- {topic: t, ask: [hello, mmm], answer: a}\n")
    assert understood_examples(load_faq(own)) == {
        True: {"text": "a question about hello", "is_final": True},
        False: {"text": "xyzzy plugh", "is_final": True}}

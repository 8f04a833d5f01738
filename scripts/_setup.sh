# Sourced by scripts/serve and scripts/test: make .venv, install the project,
# install the Debian tools it uses. Idempotent and quick when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"

apt_install() {  # apt_install BINARY PACKAGE: install a Debian package when BINARY is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  echo "setup: installing Debian package $2 (for $1)" >&2
  if ! { $sudo apt-get install -y -q "$2" >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "$2" >/dev/null 2>&1; }; }; then
    echo "setup: could not install $2; install it by hand (apt-get install $2)" >&2
    return 1
  fi
}

# .venv is built from requirements.lock (exact versions with hashes; refresh it with
# scripts/lock), never from the ranges in pyproject.toml, so every machine gets what CI
# tested. A .venv that does not match the lock (a changed lock, a package upgraded by hand,
# a leftover from an older checkout) is rebuilt from scratch.
LOCK=requirements.lock
STAMP=.venv/.turnchart-lock            # the lock .venv was built from
EDITABLE=.venv/.turnchart-project      # the pyproject.toml turnchart itself was installed with
WANT="$(sha256sum < "$LOCK" | cut -d' ' -f1)"
if [ -d .venv ]; then
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "setup: .venv was not built from this requirements.lock; rebuilding it" >&2
    rm -rf .venv
  elif ! .venv/bin/python scripts/_lockcheck.py "$LOCK"; then
    echo "setup: .venv has drifted from requirements.lock; rebuilding it" >&2
    rm -rf .venv
  fi
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv and installing from $LOCK" >&2
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$LOCK"
  .venv/bin/python scripts/_lockcheck.py "$LOCK"
  echo "$WANT" > "$STAMP"
fi
# turnchart itself (editable, no dependencies: they all come from the lock); redone only
# when pyproject.toml changes (entry points, package data).
PROJECT="$(sha256sum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$EDITABLE" ] || [ "$(cat "$EDITABLE")" != "$PROJECT" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$PROJECT" > "$EDITABLE"
fi
apt_install dot graphviz || true
# The default voice (adapters/speech/flite.py): CMU flite's libraries and slt voice; without
# them the server falls back to eSpeak NG with a warning.
apt_install flite flite || true
# Smart Turn v3.2 for `end: smart` (docs/design.md): one file out of the pinned pipecat-ai
# wheel (sha256 checked), not pipecat-ai itself; quick when it is already there.
.venv/bin/python scripts/_smart_turn.py || true

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

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
STAMP=.venv/.turnchart-installed
WANT="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "setup: installing turnchart and its test tools into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -U pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  echo "$WANT" > "$STAMP"
fi
apt_install dot graphviz || true

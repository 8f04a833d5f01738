"""Does the running environment hold exactly the versions requirements.lock pins?

Used by scripts/_setup.sh (run with .venv's python): exit 0 when every pin that applies to
this interpreter and platform is installed at that version, 1 with the differences on
stderr otherwise. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, tuple[str, str | None]]:
    found: dict[str, tuple[str, str | None]] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            name, version, marker = match.groups()
            if marker is None or marker_applies(marker):
                found[canonical(name)] = (version, marker)
    return found


def marker_applies(marker: str) -> bool:
    from packaging.markers import Marker  # pip's vendored copy is not importable; see below

    return Marker(marker).evaluate()


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def main() -> int:
    lock = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("requirements.lock")
    try:
        wanted = pins(lock)
    except ModuleNotFoundError:  # packaging is not installed yet: nothing matches
        print("lockcheck: packaging missing: environment not built from the lock", file=sys.stderr)
        return 1
    have = installed()
    wrong = [
        f"{name}: lock {version}, installed {have.get(name, 'nothing')}"
        for name, (version, _marker) in sorted(wanted.items())
        if have.get(name) != version
    ]
    for line in wrong[:20]:
        print(f"lockcheck: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())

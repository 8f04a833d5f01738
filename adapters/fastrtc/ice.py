"""Keep WebRTC media on loopback when the server is bound to loopback.

aioice gathers a host candidate on every interface except 127.0.0.1, and
pairs with every candidate the browser offers. For a server bound to
127.0.0.1 (the default) that would send media checks to the machine's other
addresses, which the operator did not expose. `restrict_to_loopback()` makes
aioice offer only 127.0.0.1 and ignore remote candidates that are not on
loopback. Browsers need `--allow-loopback-in-peer-connection` (Chromium) to
offer a loopback candidate themselves.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import aioice.ice

_ORIGINAL_ADD = aioice.ice.Connection.add_remote_candidate
_ORIGINAL_HOSTS = aioice.ice.get_host_addresses


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # mDNS names and anything else that is not an address


def _loopback_hosts(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


async def _loopback_remote(self: Any, remote_candidate: Any) -> None:
    if remote_candidate is not None and not _is_loopback(remote_candidate.host):
        return
    await _ORIGINAL_ADD(self, remote_candidate)


def restrict_to_loopback() -> None:
    """Idempotent; affects every WebRTC connection of this process."""
    aioice.ice.get_host_addresses = _loopback_hosts
    aioice.ice.Connection.add_remote_candidate = _loopback_remote  # type: ignore[method-assign]


def allow_all_interfaces() -> None:
    aioice.ice.get_host_addresses = _ORIGINAL_HOSTS
    aioice.ice.Connection.add_remote_candidate = _ORIGINAL_ADD  # type: ignore[method-assign]


def is_loopback_host(host: str) -> bool:
    return host in ("localhost",) or _is_loopback(host)

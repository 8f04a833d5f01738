"""Is this phone request really from Twilio? (`X-Twilio-Signature`)

Twilio signs every webhook and every Media Streams WebSocket handshake with the account's
auth token: base64 of HMAC-SHA1 over the URL it requested, followed by the POST form
parameters sorted by name, each name then its values (sorted, each once). A server that
checks it cannot have calls started, or a stranger's audio fed into a session, by anyone
who merely found its URL. Public algorithm: https://www.twilio.com/docs/usage/security.

Behind a proxy the URL Twilio signed is the public one, not what this server sees; set
`telephone.public_url` so both agree (README, "The phone").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The signature Twilio sends for a request to `url` with form `params`."""
    by_name: dict[str, set[str]] = {}
    for name, value in params:
        by_name.setdefault(name, set()).add(value)
    signed = url + "".join(name + value for name in sorted(by_name)
                           for value in sorted(by_name[name]))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def is_valid(auth_token: str, url: str, params: Iterable[tuple[str, str]],
             given: str | None) -> bool:
    """Whether `given` (the request's X-Twilio-Signature) signs this request; compared in
    constant time. Twilio may sign the URL with or without an explicit default port, so
    both spellings are accepted, as Twilio's own validators do."""
    if not given:
        return False
    items = list(params)
    return any(hmac.compare_digest(signature(auth_token, candidate, items).encode(),
                                   given.encode("utf-8", "replace"))
               for candidate in _spellings(url))


def _spellings(url: str) -> list[str]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return [url]
    host, slash, path = rest.partition("/")
    default = {"https": "443", "wss": "443", "http": "80", "ws": "80"}.get(scheme.lower())
    if default is None:
        return [url]
    if host.endswith(":" + default):
        other = host[: -len(default) - 1]
    elif ":" in host.rsplit("]", 1)[-1]:
        return [url]        # another port: only the URL as it is
    else:
        other = f"{host}:{default}"
    return [url, f"{scheme}://{other}{slash}{path}"]

"""Credentials out of anything a person or a log collector will read.

A Redis URL (`redis://user:password@host:6379/0`, or `?password=` in its query)
carries its secret in plain text, and it reaches `/health`, error messages and
log lines unless every such place goes through `redact_credentials`. Pure
string work: the engine never sees URLs, so this lives with the adapters.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ — userinfo runs to the last "@" before the host part ends
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
                       r"(?P<userinfo>[^/?#\s\"'<>]*)@")
# ?password=… &token=… (redis-py reads `password` from the query too)
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|pass|token|access_token|secret|api_?key|auth)=)"
    r"(?P<value>[^&;#\s\"']*)", re.IGNORECASE)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _secret = match["userinfo"].partition(":")
    kept = f"{user}:{MASK}" if colon else MASK   # no colon: the whole userinfo may be a token
    return f"{match['scheme']}{kept}@"


def redact_credentials(text: str) -> str:
    """`text` with the password (or token) of every URL in it replaced by `***`:
    `redis://app:s3cret@db:6379/0` → `redis://app:***@db:6379/0`. Text without
    credentials comes back unchanged."""
    if "://" not in text and "=" not in text:
        return text
    return _SECRET_QUERY.sub(lambda m: m["key"] + MASK, _USERINFO.sub(_mask_userinfo, text))

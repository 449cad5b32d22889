"""Hide secrets in URLs before they reach a log line, a banner or an error message."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/...`` becomes ``scheme://user:***@host/...``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with every password of ``urls`` (and any URL userinfo) masked."""
    for url in urls:
        if url:
            match = _USERINFO.match(url)
            if match and match["pw"]:
                text = text.replace(match["pw"], "***")
    return re.sub(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s]*):[^@/\s]*@", r"\1:***@", text)

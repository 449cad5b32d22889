"""Hide secrets in URLs before they reach a log line, a banner or an error message.

A password ends at the ``@`` before the host; it may hold ``/``, ``#`` or ``?`` (written
raw by hand, or percent-encoded as the chart writes it), and is masked in both forms.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<pw>[^@]*)@")
_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s]*):[^@\s]*@")


def redact_url(url: str) -> str:
    """``scheme://user:secret@host/...`` becomes ``scheme://user:***@host/...``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with every password of ``urls`` (and any URL userinfo) masked: as written
    in the URL, decoded, and encoded."""
    for url in urls:
        if url:
            match = _USERINFO.match(url)
            if match and match["pw"]:
                written = match["pw"]
                forms = {written, unquote(written), quote(unquote(written), safe="")}
                for form in sorted(forms, key=len, reverse=True):
                    text = text.replace(form, "***")
    return _IN_TEXT.sub(r"\1:***@", text)

"""Keep credentials out of logs, consoles, error messages and the journal.

Camera and stream addresses carry secrets: ``rtsp://user:password@host/...``, ``?password=``
or ``?token=`` query strings, GStreamer's ``rtspsrc user-pw=...``. Everything edgecrack shows
or records about a source goes through :func:`redact` first. The deploy script calls it too
(``python -m edgecrack.redact TEXT``), so there is one implementation of the rule.

People type passwords with ``@`` and ``/`` in them, unencoded. A strict URL parser then puts
part of the password into the host or the path (``urlsplit("rtsp://u:p/w@h/x").netloc`` is
``u:p``), so the credentials end at the *last* ``@`` that is followed by something shaped like
a host. When in doubt more is hidden, never less.
"""

from __future__ import annotations

import re
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

#: Query / ``key=value`` names whose values are secrets (compared case-insensitively).
SECRET_KEYS = frozenset({
    "password", "passwd", "pass", "pwd", "pw", "user-pw", "user_pw", "userpw", "token", "access_token", "auth",
    "authorization", "key", "apikey", "api_key", "api-key", "secret", "client_secret", "signature", "sig",
    "credential", "credentials", "session", "sessionid", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
})

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# A URL inside free text ends at whitespace or a quote (JSON, shell, messages).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]*")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::\d*)?(?=[/?#]|$)")
_PAIR = re.compile(r"(^|[?&;#\s])([A-Za-z0-9_.-]+)=(\"[^\"]*\"|'[^']*'|[^\s&;#\"']*)")


def _userinfo_end(rest: str) -> int | None:
    """Index of the ``@`` that ends the credentials in ``rest`` (the URL after ``scheme://``)."""
    ats = [i for i, c in enumerate(rest) if c == "@"]
    for i in reversed(ats):
        if _HOST.match(rest, i + 1):
            return i
    return ats[-1] if ats else None


def _mask_pairs(text: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group(2).lower() in SECRET_KEYS:
            return f"{m.group(1)}{m.group(2)}={MASK}"
        return m.group(0)

    return _PAIR.sub(sub, text)


def redact_url(url: str) -> str:
    """One address with its credentials masked; the whole string is taken as the address.

    Args:
        url: ``rtsp://user:pass@host:554/path?token=...`` or anything else.

    Returns:
        ``rtsp://***@host:554/path?token=***``; text without a scheme only gets its
        ``password=...``-style pairs masked.
    """
    m = _SCHEME.match(url)
    if not m:
        return _mask_pairs(url)
    scheme, rest = url[:m.end()], url[m.end():]
    at = _userinfo_end(rest)
    if at is not None:
        rest = f"{MASK}@{rest[at + 1:]}"
    try:
        parts = urlsplit(scheme + rest)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: hide everything after the scheme
        return scheme + MASK
    if not parts.query and not parts.fragment:
        return scheme + rest
    return urlunsplit(parts._replace(query=_mask_pairs(parts.query), fragment=_mask_pairs(parts.fragment)))


def redact(text: str) -> str:
    """``text`` with every credential in it masked: URL user info, secret query values, and
    secret ``key=value`` pairs (``rtspsrc user-pw=...``).

    A text that is one address (a ``--source`` value) is treated as a whole, so a password
    with spaces in it is still hidden; in longer text each address ends at whitespace.

    Args:
        text: A source spec, URL, pipeline, message or hint.

    Returns:
        The same text with ``***`` in place of secrets.
    """
    if not text:
        return text
    if _SCHEME.match(text.strip()) and not any(c in text.strip() for c in "\"'<>"):
        s = text.strip()
        lead = text[:len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()):]
        return lead + _mask_pairs(redact_url(s)) + trail
    return _mask_pairs(_URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text))


def redact_record(obj: Any) -> Any:
    """A copy of a JSON-like record with :func:`redact` applied to every string in it."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_record(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_record(v) for v in obj]
    return obj


if __name__ == "__main__":  # python -m edgecrack.redact TEXT: what the deploy script prints
    print(redact(" ".join(sys.argv[1:])))

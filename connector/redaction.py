"""Secrets out of text: one `redact()` for every edge (report, logs, rejects, webhook, exceptions, CLI)."""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import quote, unquote

MASK = "***"
# Shorter values are too likely to occur in ordinary text ("true", a port, a word): masking them would
# shred every message. URL passwords of any length are still masked by _USERINFO.
MIN_SECRET_LENGTH = 6
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/?#@]*):([^\s/?#]*)@")
_ACCESS_TOKEN = re.compile(r"(?i)(\baccess-token[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+")

# One process-wide set that only grows: log records (from sender threads) and exceptions have no project
# at hand, and a value once known as a secret stays masked everywhere, even in another project's output.
_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def register(*values: str | None) -> None:
    """Add secrets to mask from now on, with the forms they take inside URLs, JSON and reprs."""
    global _secrets, _pattern
    forms = {form for value in values if value for form in _forms(value) if len(form) >= MIN_SECRET_LENGTH}
    with _lock:
        if forms <= _secrets:
            return
        _secrets = _secrets | forms
        # Longest first: a secret that contains another is masked whole.
        _pattern = re.compile("|".join(map(re.escape, sorted(_secrets, key=len, reverse=True))))


def redact(text: str) -> str:
    """`text` with every registered secret, URL password and Access-Token header value replaced by ***."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _USERINFO.sub(rf"\1:{MASK}@", text)
    return _ACCESS_TOKEN.sub(rf"\1{MASK}", text)


def _forms(value: str) -> set[str]:
    return {value, value.strip(), unquote(value), quote(value, safe=""), json.dumps(value)[1:-1], repr(value)[1:-1]}

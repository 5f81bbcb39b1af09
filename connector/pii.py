"""Normalization and SHA-256 hashing of match keys (email, phone, external_id), as TikTok specifies."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import phonenumbers

_SHA256_HEX = re.compile(r"^[A-Fa-f0-9]{64}$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONE_PUNCTUATION = re.compile(r"[\s()\-./]")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_hashed(text: str) -> bool:
    return len(text) == 64 and _SHA256_HEX.match(text) is not None


def split_values(raw: object) -> list[str]:
    """One value, a list/array column, or a comma-separated string → non-empty trimmed strings."""
    if raw is None:
        return []
    if isinstance(raw, str) and "," not in raw:
        text = raw.strip()
        return [text] if text else []
    items: Iterable[object] = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    return [s for s in (str(item).strip() for item in items if item is not None) if s]


def hash_email(raw: str) -> str | None:
    """Trim and lowercase, then SHA-256; a 64-hex value is taken as already hashed."""
    text = raw.strip()
    if not text:
        return None
    if is_hashed(text):
        return text.lower()
    if "@" not in text:
        return None  # not an email: hashing it would only send noise
    return sha256_hex(text.lower())


def normalize_phone(raw: str, default_region: str | None = None) -> str | None:
    """E.164 with the leading '+', or None when the value cannot be a phone number.

    National numbers need `default_region` (e.g. "US"); without it a number without '+' is read as
    digits that already start with the country code, which is what E.164 without the '+' looks like.
    """
    text = raw.strip()
    if not (text[:1] == "+" and text[1:].isdigit()):  # the common clean case skips both rewrites
        # "+44 (0)20 …": the "(0)" is the national trunk prefix, never dialled after the country code.
        text = _PHONE_PUNCTUATION.sub("", text.replace("(0)", ""))
    if not text:
        return None
    if _E164.match(text) and not zero_after_country_code(text):
        return text  # already E.164: taken as is, without the slower parse
    if text.startswith("00") and text[2:].isdigit():
        candidate = "+" + text[2:]
    elif text.startswith("+") or default_region:
        candidate = text
    elif text.isdigit():
        candidate = "+" + text
    else:
        return None
    try:
        number = phonenumbers.parse(candidate, None if candidate.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None  # too short, too long, or only diallable locally (no area code)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def zero_after_country_code(e164: str) -> bool:
    """"+44 020…" written as E.164: the national trunk 0 must go (phonenumbers knows where it may stay)."""
    for length in (1, 2, 3):
        code = int(e164[1:1 + length])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return e164[1 + length:2 + length] == "0"
    return False


def hash_phone(raw: str, default_region: str | None = None) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if is_hashed(text):
        return text.lower()
    e164 = normalize_phone(text, default_region)
    return sha256_hex(e164) if e164 else None


def hash_external_id(raw: str) -> str | None:
    """Trim only (case is kept), then SHA-256."""
    text = raw.strip()
    if not text:
        return None
    return text.lower() if is_hashed(text) else sha256_hex(text)

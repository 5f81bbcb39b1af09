"""Match-key normalization and hashing, checked against TikTok's documented examples."""

from __future__ import annotations

import hashlib

import pytest

from connector import pii

# TikTok's examples (docs/tiktok-events-api.md, `user` table).
ALICE_EMAIL_SHA = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
PHONE_SHA = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"
USER_123_SHA = "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_email_example_from_tiktok_docs() -> None:
    assert pii.hash_email(" ALICE_abc@gmail.com ") == ALICE_EMAIL_SHA


def test_email_is_not_rewritten_beyond_trim_and_lowercase() -> None:
    # No Gmail dot/plus rewriting: these are different addresses to TikTok.
    assert pii.hash_email("a.l.i.c.e+promo@gmail.com") == sha("a.l.i.c.e+promo@gmail.com")
    assert pii.hash_email("a.l.i.c.e+promo@gmail.com") != pii.hash_email("alice@gmail.com")


def test_phone_example_from_tiktok_docs() -> None:
    assert pii.normalize_phone("(+1)2133734253") == "+12133734253"
    assert pii.hash_phone("(+1)2133734253") == PHONE_SHA
    # The hash includes the '+'.
    assert PHONE_SHA == sha("+12133734253") != sha("12133734253")


def test_external_id_example_from_tiktok_docs() -> None:
    assert pii.hash_external_id("user_123") == USER_123_SHA
    assert pii.hash_external_id("  user_123 ") == USER_123_SHA
    # Case is kept for external ids (unlike email).
    assert pii.hash_external_id("USER_123") == sha("USER_123") != USER_123_SHA


@pytest.mark.parametrize("hash_one", [pii.hash_email, pii.hash_phone, pii.hash_external_id])
def test_sha256_hex_passes_through_lowercased_not_rehashed(hash_one) -> None:
    assert hash_one(ALICE_EMAIL_SHA.upper()) == ALICE_EMAIL_SHA
    assert hash_one(f"  {PHONE_SHA}  ") == PHONE_SHA


def test_hex_check_comes_before_normalization() -> None:
    # A 64-hex value has no '@' and is no phone number: it must not be dropped as invalid either.
    assert pii.hash_email(USER_123_SHA) == USER_123_SHA
    assert pii.hash_phone(USER_123_SHA) == USER_123_SHA
    # 63 or 65 hex characters are not hashes.
    assert pii.hash_external_id(USER_123_SHA[:63]) == sha(USER_123_SHA[:63])


@pytest.mark.parametrize("hash_one", [pii.hash_email, pii.hash_phone, pii.hash_external_id])
@pytest.mark.parametrize("blank", ["", " ", "\t\n "])
def test_empty_and_whitespace_values_are_dropped(hash_one, blank: str) -> None:
    assert hash_one(blank) is None


def test_split_values_lists_and_comma_separated_strings() -> None:
    assert pii.split_values(None) == []
    assert pii.split_values("a@x.com") == ["a@x.com"]
    assert pii.split_values(" a@x.com , b@x.com,, ") == ["a@x.com", "b@x.com"]
    assert pii.split_values(["a@x.com", None, " ", " b@x.com "]) == ["a@x.com", "b@x.com"]
    assert pii.split_values(("+12133734253",)) == ["+12133734253"]


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("(+1)2133734253", None, "+12133734253"),
    ("+1 (213) 373-4253", None, "+12133734253"),
    ("+1.213.373.4253", None, "+12133734253"),
    ("12133734253", None, "+12133734253"),  # E.164 digits without the '+'
    ("0012133734253", None, "+12133734253"),  # international 00 prefix
    ("0044 020 7946 0958", None, "+442079460958"),
    ("+44 (0) 20 7946 0958", None, "+442079460958"),  # no leading 0 after the country code
    ("(213) 373-4253", "US", "+12133734253"),  # national numbers need a default region
    ("020 7946 0958", "GB", "+442079460958"),
    ("+12133734253", "GB", "+12133734253"),  # an explicit country code wins over the region
])
def test_phone_normalization(raw: str, region: str | None, expected: str) -> None:
    assert pii.normalize_phone(raw, region) == expected
    assert pii.hash_phone(raw, region) == sha(expected)


@pytest.mark.parametrize(("raw", "region"), [
    ("not a phone", None),
    ("not a phone", "US"),
    ("12", None),
    ("+1", None),
    ("abc", "US"),
    ("2133734253", None),  # a national number without a region is not guessed
])
def test_invalid_phones_are_dropped(raw: str, region: str | None) -> None:
    assert pii.normalize_phone(raw, region) is None
    assert pii.hash_phone(raw, region) is None


def test_local_only_number_is_not_a_phone() -> None:
    assert pii.normalize_phone("555-0100", "US") is None


@pytest.mark.parametrize("raw", ["+44 020 7946 0958", "+4402079460958"])
def test_trunk_zero_after_country_code_is_removed(raw: str) -> None:
    assert pii.normalize_phone(raw) == "+442079460958"


def test_email_without_at_sign_is_dropped() -> None:
    assert pii.hash_email("not an email") is None

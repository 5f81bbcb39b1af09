"""SQL that differs by warehouse: Jinja macros for query templates, and match-key hashing in SQL.

The hashing expressions reproduce pii.py for single values: whitespace trimmed, 64-hex values passed
through lowercased, empty values NULL, emails without '@' NULL, phones to E.164 by digit rules. Where
they cannot match Python (see README, "Hashing in the warehouse") the difference is documented.

Macro arguments are of two sorts. Expressions (`expr`, and a `dateadd` amount given as text) are SQL that
the template's author writes, pasted as written, like the rest of the template. Values that select SQL
(the `dateadd` unit, the `days_ago` days, a phone region) are checked, and a wrong one is a MacroError
that names the macro, never SQL of the caller's making.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import phonenumbers

HEX64 = "^[A-Fa-f0-9]{64}$"
E164 = "^[+][1-9][0-9]{6,14}$"
INTERNATIONAL_00 = "^00[1-9][0-9]{6,14}$"
DIGITS = "^[0-9]{6,15}$"
INTERNATIONAL_DIGITS = "^[1-9][0-9]{6,14}$"  # without a region: digits that start with a country code
PHONE_PUNCTUATION = "[[:space:]()./-]"
TRUNK_ZERO = "[(]0[)]"
# What Python's str.strip() removes: ASCII whitespace plus the Unicode spaces (no-break, em, ideographic…).
_WHITESPACE = "[:space:]\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EDGE_SPACE = f"^[{_WHITESPACE}]+|[{_WHITESPACE}]+$"
INFINITE_SECONDS = 9_223_372_036_854_775_807  # an infinite timestamp's Unix seconds: the largest BIGINT


DATE_UNITS = ("second", "minute", "hour", "day", "week", "month", "year")


class MacroError(ValueError):
    """A template called a macro with a value it does not take."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def whole_number(value: Any, macro: str, example: str) -> int:
    """An int, or text or a float that is one; anything else is refused, never pasted into SQL."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,18}\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise MacroError(f"{macro}: {str(value)[:40]!r} is not a whole number", f"e.g. {example}")


def phone_region(region: Any, macro: str) -> str:
    """A region code phonenumbers knows (US, GB…): its country code and trunk prefix go into the SQL."""
    if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise MacroError(f"{macro}: {str(region)[:40]!r} is not a region code", "a region such as 'US' or 'GB'")
    return region.upper()


@functools.cache
def _trunk_zero_codes() -> dict[int, str]:
    """Country codes after which phonenumbers drops a written trunk 0 ("+44 020…" → +4420…), by length,
    as regex alternations; elsewhere (+39 Italy, …) a 0 after the code is part of the number."""
    by_length: dict[int, list[str]] = {}
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        if any(_drops_trunk_zero(code, national) for national in ("612345678", "21234567", "2123456")):
            by_length.setdefault(len(str(code)), []).append(str(code))
    return {length: "|".join(codes) for length, codes in sorted(by_length.items())}


def _drops_trunk_zero(code: int, national: str) -> bool:
    try:
        number = phonenumbers.parse(f"+{code}0{national}", None)
    except phonenumbers.NumberParseException:
        return False
    return not phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).startswith(f"+{code}0")


@dataclass(frozen=True)
class Dialect:
    name: str

    def sha256(self, expr: str) -> str:
        if self.name == "postgresql":
            return f"encode(sha256(convert_to({expr}, 'UTF8')), 'hex')"
        if self.name == "snowflake":
            return f"sha2({expr}, 256)"
        return f"sha256({expr})"

    def regexp_matches(self, expr: str, pattern: str) -> str:
        if self.name == "postgresql":
            return f"({expr} ~ '{pattern}')"
        if self.name == "snowflake":
            return f"regexp_like({expr}, '{pattern}')"
        return f"regexp_matches({expr}, '{pattern}')"

    def regexp_remove(self, expr: str, pattern: str) -> str:
        if self.name == "snowflake":
            return f"regexp_replace({expr}, '{pattern}', '')"
        return f"regexp_replace({expr}, '{pattern}', '', 'g')"

    def dateadd(self, unit: str, amount: int | str, expr: str) -> str:
        """`expr` plus `amount` units; `amount` is a whole number, or SQL text such as a column name."""
        if not isinstance(unit, str) or unit.lower() not in DATE_UNITS:
            raise MacroError(f"dateadd: {str(unit)[:40]!r} is not a unit", f"one of {', '.join(DATE_UNITS)}")
        unit = unit.lower()
        if not isinstance(amount, str):
            amount = whole_number(amount, "dateadd", "dateadd('day', -28, 'current_timestamp')")
        if self.name == "snowflake":
            return f"dateadd({unit}, {amount}, {expr})"
        if self.name == "postgresql":
            return f"({expr} + ({amount}) * interval '1 {unit}')"
        return f"({expr} + to_{unit}s(cast({amount} as bigint)))"

    def days_ago(self, days: int | str) -> str:
        return self.dateadd("day", -whole_number(days, "days_ago", "days_ago(28)"), "current_timestamp")

    def epoch_seconds(self, expr: str) -> str:
        """Whole Unix seconds of a timestamp (a naive one read as UTC) or date. An infinite one gives the
        largest BIGINT, which is no time of the years 1 to 9999 (PostgreSQL cannot cast infinity to bigint:
        one such row would fail every read)."""
        if self.name == "postgresql":
            return (f"case when isfinite({expr}) then cast(floor(extract(epoch from {expr})) as bigint) "
                    f"when {expr} is not null then {INFINITE_SECONDS} end")
        if self.name == "snowflake":
            # epoch_second rounds (.6 s up) in some engines; whole microseconds floored are exact
            return f"cast(floor(date_part(epoch_microsecond, {expr}) / 1000000) as bigint)"
        return f"case when isinf({expr}) then {INFINITE_SECONDS} else cast(floor(epoch({expr})) as bigint) end"

    def as_double(self, expr: str) -> str:
        return f"cast({expr} as double precision)" if self.name == "postgresql" else f"cast({expr} as double)"

    def cast_timestamp(self, expr: str, with_time_zone: bool = True) -> str:
        if self.name == "snowflake":
            return f"cast({expr} as {'timestamp_tz' if with_time_zone else 'timestamp_ntz'})"
        return f"cast({expr} as {'timestamptz' if with_time_zone else 'timestamp'})"

    def trimmed_text(self, expr: str) -> str:
        return self.regexp_remove(f"cast({expr} as varchar)", EDGE_SPACE)

    def hashed_email(self, expr: str) -> str:
        t = self.trimmed_text(expr)
        return (f"case when {t} is null or {t} = '' then null "
                f"when {self.regexp_matches(t, HEX64)} then lower({t}) "
                f"when position('@' in {t}) = 0 then null "
                f"else {self.sha256(f'lower({t})')} end")

    def hashed_external_id(self, expr: str) -> str:
        t = self.trimmed_text(expr)
        return (f"case when {t} is null or {t} = '' then null "
                f"when {self.regexp_matches(t, HEX64)} then lower({t}) else {self.sha256(t)} end")

    def e164_phone(self, expr: str, default_region: str | None = None) -> str:
        t = self.trimmed_text(expr)
        p = self.regexp_remove(self.regexp_remove(t, TRUNK_ZERO), PHONE_PUNCTUATION)
        national = "null"
        if default_region:
            default_region = phone_region(default_region, "hashed_phone")
            code = phonenumbers.country_code_for_region(default_region)
            metadata = phonenumbers.PhoneMetadata.metadata_for_region(default_region)
            prefix = (metadata.national_prefix or "") if metadata else ""
            prefix = prefix if prefix.isdigit() else ""
            stripped = (f"case when substr({p}, 1, {len(prefix)}) = '{prefix}' then substr({p}, {len(prefix) + 1}) "
                        f"else {p} end") if prefix else p
            national = f"'+{code}' || {stripped}"
        digits_only = national if default_region else f"'+' || {p}"
        trunk_zero = " ".join(
            f"when {self.regexp_matches(p, f'^[+]({codes})0[0-9]+$')} "
            f"then '+' || substr({p}, 2, {length}) || substr({p}, {length + 3}) "
            for length, codes in _trunk_zero_codes().items())
        return (f"case when {p} is null or {p} = '' then null "
                f"{trunk_zero}"
                f"when {self.regexp_matches(p, E164)} then {p} "
                f"when {self.regexp_matches(p, INTERNATIONAL_00)} then '+' || substr({p}, 3) "
                f"when {self.regexp_matches(p, DIGITS if default_region else INTERNATIONAL_DIGITS)} "
                f"then {digits_only} else null end")

    def hashed_phone(self, expr: str, default_region: str | None = None) -> str:
        t = self.trimmed_text(expr)
        e164 = self.e164_phone(expr, default_region)
        return (f"case when {self.regexp_matches(t, HEX64)} then lower({t}) "
                f"else {self.sha256(e164)} end")

    def macros(self) -> dict[str, Any]:
        """Functions a query template can call: `{{ dateadd('day', -28, 'current_timestamp') }}`."""
        return {
            "sha256": self.sha256, "dateadd": self.dateadd, "cast_timestamp": self.cast_timestamp,
            "hashed_email": self.hashed_email, "hashed_phone": self.hashed_phone,
            "hashed_external_id": self.hashed_external_id,
            "days_ago": self.days_ago,
        }

"""Phone numbers to E.164 in DuckDB or PostgreSQL SQL, exactly as pii.normalize_phone does it, where SQL can prove it.

pii.normalize_phone takes a clean E.164 number as it is and asks `phonenumbers` about everything else.
What phonenumbers does with a number that is only digits is a handful of rules read from its metadata:
the country code (country codes are a prefix code of 1 to 3 digits), the national (trunk) prefix it
strips when the rest still fits the country's number pattern, and the lengths it calls possible. Where a
country's metadata is plain enough (the national prefix a list of digit strings without a rewrite rule,
the number pattern a regular expression RE2 and PostgreSQL read as Python does), `international` and
`national` write those rules as SQL: the number phonenumbers formats, or NULL where SQL cannot tell (the
row then goes through Python). tests/test_sql_events.py compares both on generated numbers of many countries.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata, ValidationResult
from phonenumbers.phonenumberutil import _test_number_length  # the length rule, as parse() applies it

from .sql_functions import SqlFunctions

# Characters SQL rewrites like pii.normalize_phone: digits, '+', and the punctuation it removes (spaces only:
# other whitespace inside a number goes to Python).
PHONE_CHARACTERS = "[0-9+() ./-]+"
_SAFE_PATTERN = re.compile(r"(?:[0-9\[\]\-|(){},?:]|\\d)*")
_PLAIN_PREFIXES = re.compile(r"[0-9]+(?:\|[0-9]+)*")
_MAX_NSN = 17  # phonenumbers' longest national significant number
_LONGEST_DIGITS = 20  # longer inputs are left to Python (parse refuses 250+ characters; never reached here)


@dataclass(frozen=True)
class _Plan:
    """One country's metadata, as SQL needs it."""

    code: str  # the country calling code's digits
    pattern: str  # general_desc national number pattern (full match)
    prefixes: tuple[str, ...]  # national prefixes for parsing, in the order Python's regex tries them
    keep_stripped: tuple[int, ...]  # lengths of a stripped number parse() keeps (possible or too long)
    possible: tuple[int, ...]  # lengths is_possible_number calls possible


def _lengths(metadata: PhoneMetadata, results: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in range(_LONGEST_DIGITS + 1) if _test_number_length("5" * n, metadata) in results)


Prepare = Callable[[str, str], str]  # an expression → the column computing it once per row (sql_events)


@functools.cache
def _plan(code: int) -> _Plan | None:
    """The plan for numbers of this country code (its main region's metadata), or None when SQL cannot follow
    phonenumbers there (a rewrite rule, a national prefix that is a pattern, a non-geographic code…)."""
    region = phonenumbers.region_code_for_country_code(code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    return None if metadata is None or region == "001" else _plan_of(metadata)


def _plan_of(metadata: PhoneMetadata) -> _Plan | None:
    prefix = metadata.national_prefix_for_parsing
    pattern = metadata.general_desc.national_number_pattern
    if metadata.national_prefix_transform_rule or (prefix and not _PLAIN_PREFIXES.fullmatch(prefix)) \
            or not pattern or not _SAFE_PATTERN.fullmatch(pattern):
        return None
    keep = _lengths(metadata, (ValidationResult.IS_POSSIBLE, ValidationResult.TOO_LONG))
    possible = tuple(n for n in _lengths(metadata, (ValidationResult.IS_POSSIBLE,)) if 2 <= n <= _MAX_NSN)
    return _Plan(str(metadata.country_code), pattern, tuple(prefix.split("|")) if prefix else (), keep, possible)


def _lengths(metadata: PhoneMetadata, results: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in range(_LONGEST_DIGITS + 1) if _test_number_length("5" * n, metadata) in results)


def _in(expr: str, values: tuple[int, ...]) -> str:
    return f"{expr} in ({', '.join(map(str, values))})" if values else "false"


_PREFIX_WIDTH = 13
WIDTH = _MAX_NSN + 2 + _PREFIX_WIDTH  # one entry of code_index()


@functools.cache
def code_index() -> str:
    """The country codes, as one string with an entry of WIDTH characters for each first three digits of an
    international number (country codes are a prefix code of 1 to 3 digits, so those digits name the code):
    one character per national number length from 0 to _MAX_NSN ('1': possible), the code's length ('0': no
    valid code), its national prefixes (comma-separated). SQL reads an entry with substr (a CASE or IN list
    per code costs tens of milliseconds to plan in every page's query, a string search microseconds per row).
    Codes SQL does not follow (a national prefix that is a pattern or is rewritten, non-geographic codes)
    get no possible length: Python decides their numbers."""
    codes = {str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
    assert not any(a != b and b.startswith(a) for a in codes for b in codes), "country codes are a prefix code"
    entries = []
    for first in range(1000):
        digits = f"{first:03d}"
        code = next((digits[:n] for n in (1, 2, 3) if digits[:n] in codes), None)
        mask, prefixes = "0" * (_MAX_NSN + 1), ""
        if code is not None:
            region = phonenumbers.region_code_for_country_code(int(code))
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(int(code), region)
            prefix = (metadata.national_prefix_for_parsing or "") if metadata is not None else ""
            if metadata is not None and region != "001" and not metadata.national_prefix_transform_rule \
                    and (not prefix or _PLAIN_PREFIXES.fullmatch(prefix)) and len(prefix) <= _PREFIX_WIDTH:
                possible = set(_lengths(metadata, (ValidationResult.IS_POSSIBLE,)))
                mask = "".join("1" if 2 <= n <= _MAX_NSN and n in possible else "0" for n in range(_MAX_NSN + 1))
                prefixes = prefix.replace("|", ",")
        entries.append(f"{mask}{len(code) if code else 0}{prefixes:<{_PREFIX_WIDTH}}")
    return "".join(entries)


def _entry(digits: str, index: str, sql: SqlFunctions) -> str:
    """The code_index() entry of `digits` (at least three ASCII digits)."""
    return sql.slice(index, f"{sql.three_digits(digits)} * {WIDTH} + 1", WIDTH)


def code_length(digits: str, index: str, sql: SqlFunctions) -> str:
    """SQL: the length of the country code `digits` start with (0: none), as pii.zero_after_country_code
    finds it."""
    return sql.slice_digit(index, f"{sql.three_digits(digits)} * {WIDTH} + 1", WIDTH, _MAX_NSN + 2)


def international(digits: str, index: str, prepare: Prepare, sql: SqlFunctions) -> str:
    """SQL: the E.164 number pii.normalize_phone gets from phonenumbers.parse("+" + digits), or NULL where
    SQL cannot tell or phonenumbers finds no possible number (Python then decides the row). `digits` (a
    prepared column) are ASCII digits or NULL; `index` binds code_index().

    Where the national number starts with the code's national prefix ("+44 0 20…"), whether phonenumbers
    strips it depends on its patterns: SQL leaves that to Python."""
    # Codes never start with 0; parse() wants more than two digits after '+'.
    info = prepare(f"case when left({digits}, 1) <> '0' and length({digits}) between 3 and {_LONGEST_DIGITS} "
                   f"then {_entry(digits, index, sql)} end", "phone_code")
    length = f"cast(substr({info}, {_MAX_NSN + 2}, 1) as integer)"
    # Columns of their own: each is read several times below, and computed once per row so.
    rest = prepare(f"substr({digits}, {length} + 1)", "phone_national")
    prefixes = prepare(f"trim(substr({info}, {_MAX_NSN + 3}))", "phone_prefixes")
    kept = " and ".join(f"(split_part({prefixes}, ',', {k}) = '' or not starts_with({rest}, split_part({prefixes}, ',', {k})))"
                        for k in range(1, _PREFIX_WIDTH // 2 + 2))
    return (f"case when {info} is not null and {length} > 0 and length({rest}) <= {_MAX_NSN} "
            f"and substr({info}, 1 + length({rest}), 1) = '1' and {kept} then '+' || {digits} end")


def national(digits: str, region: str, prepare: Prepare, sql: SqlFunctions) -> str | None:
    """SQL: the E.164 number phonenumbers.parse(digits, region) formats, for `digits` (a prepared column of
    ASCII digits not starting with 00, or NULL), NULL where SQL cannot tell or the number is not possible;
    None when SQL cannot follow this region at all."""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return None
    metadata = PhoneMetadata.metadata_for_region(region)
    here = None if metadata is None else _plan_of(metadata)
    main = None if here is None else _plan(int(here.code))
    idd = metadata.international_prefix if metadata is not None else None
    if here is None or main is None or not idd or not _SAFE_PATTERN.fullmatch(idd):
        return None
    assert metadata is not None

    def fits(expr: str) -> str:  # the region's number pattern, compiled once per query as a column of its own
        return prepare(sql.full_match(expr, here.pattern), "phone_fits")

    def formatted(nsn: str) -> str:
        return f"case when {_in(f'length({nsn})', main.possible)} then '+{main.code}' || {nsn} end"

    too_long = _lengths(metadata, (ValidationResult.TOO_LONG,))
    after_code = f"substr({digits}, {len(here.code) + 1})"
    unsure = " or ".join(f"starts_with({after_code}, '{prefix}')" for prefix in {*here.prefixes, *main.prefixes})
    # _maybe_extract_country_code: a number starting with the region's code is read as code + national number
    # when it does not fit the pattern but the rest does, or is too long (then the national prefix is
    # stripped again: where the rest starts with one, Python decides).
    branches = [f"when starts_with({digits}, '{here.code}') and ({unsure or 'false'}) then null",
                f"when starts_with({digits}, '{here.code}') and ((not {fits(digits)} and {fits(after_code)}) "
                f"or {_in(f'length({digits})', too_long)}) then {formatted(after_code)}"]
    for prefix in here.prefixes:  # _maybe_strip_national_prefix_carrier_code, then parse()'s length rule
        rest = f"substr({digits}, {len(prefix) + 1})"
        branches.append(f"when starts_with({digits}, '{prefix}') then case when ({fits(digits)} and not {fits(rest)}) "
                        f"or not {_in(f'length({rest})', here.keep_stripped)} then {formatted(digits)} "
                        f"else {formatted(rest)} end")
    # An international dialling prefix (011 in the US) makes phonenumbers read a country code: Python decides.
    return (f"case when length({digits}) < 2 or length({digits}) > {_LONGEST_DIGITS} "
            f"or {sql.starts_matching(digits, idd)} then null "
            f"{' '.join(branches)} else {formatted(digits)} end")

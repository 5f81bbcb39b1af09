"""Phone numbers to E.164 in DuckDB SQL, exactly as pii.normalize_phone does it, where SQL can prove it.

pii.normalize_phone takes a clean E.164 number as it is and asks `phonenumbers` about everything else.
What phonenumbers does with a number that is only digits is a handful of rules read from its metadata:
the country code (the longest valid prefix of 1–3 digits after '+'), the national (trunk) prefix it strips
when the rest still looks like a number of the country, and the lengths it calls possible. For every
country whose metadata is plain enough (the national prefix a list of digit strings without a rewrite
rule, the number patterns regular expressions RE2 reads as Python does), this module writes those rules
as SQL: `E164.e164` is the number phonenumbers formats, or NULL where the SQL cannot tell (the row then
goes through Python). The equivalence tests compare both on generated numbers of many countries.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata, ValidationResult
from phonenumbers.phonenumberutil import _test_number_length  # the length rule, as parse() applies it

E164_FULL = "[+][1-9][0-9]{6,14}"
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


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_MAX_PREFIXES = 3


@functools.cache
def code_table() -> str:
    """Every country code SQL follows, as one string searched per number (a CASE or IN list per code would
    cost tens of milliseconds to plan in every page's query): `|<code>=`, one character per national number
    length from 0 to _MAX_NSN ('1': possible), the code's length, and its national prefixes (comma-separated,
    at most _MAX_PREFIXES). Codes whose national prefix is a pattern or is rewritten are left out."""
    entries = []
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        region = phonenumbers.region_code_for_country_code(code)
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
        if metadata is None or region == "001" or metadata.national_prefix_transform_rule:
            continue
        prefix = metadata.national_prefix_for_parsing or ""
        if prefix and (not _PLAIN_PREFIXES.fullmatch(prefix) or prefix.count("|") >= _MAX_PREFIXES):
            continue
        possible = set(_lengths(metadata, (ValidationResult.IS_POSSIBLE,)))
        mask = "".join("1" if 2 <= n <= _MAX_NSN and n in possible else "0" for n in range(_MAX_NSN + 1))
        entries.append(f"|{code}={mask}{len(str(code))}{prefix.replace('|', ',')}")
    return "".join(entries) + "|"


def international(digits: str, table: str, prepare: Prepare) -> str:
    """SQL: the E.164 number pii.normalize_phone gets from phonenumbers.parse("+" + digits), or NULL where
    SQL cannot tell or phonenumbers finds no possible number (Python then decides the row). `digits` (a
    prepared column) are ASCII digits or NULL; `table` binds code_table().

    Country codes are a prefix code, so the code a number starts with is the one phonenumbers extracts.
    Where the national number starts with the code's national prefix ("+44 0 20…"), whether phonenumbers
    strips it depends on its patterns: SQL leaves that to Python."""
    found = [(n, f"position('|' || left({digits}, {n}) || '=' in {table})") for n in (1, 2, 3)]
    lookup = " ".join(f"when {position} > 0 then split_part(substr({table}, {position} + {n + 2}, 40), '|', 1)"
                      for n, position in found)
    # Codes never start with 0; parse() wants more than two digits after '+'.
    info = prepare(f"case when left({digits}, 1) <> '0' and length({digits}) between 3 and {_LONGEST_DIGITS} "
                   f"then case {lookup} end end", "phone_code")
    code_length = f"cast(substr({info}, {_MAX_NSN + 2}, 1) as integer)"
    rest = f"substr({digits}, {code_length} + 1)"
    prefixes = f"substr({info}, {_MAX_NSN + 3})"
    kept = " and ".join(f"(split_part({prefixes}, ',', {k}) = '' or not starts_with({rest}, split_part({prefixes}, ',', {k})))"
                        for k in range(1, _MAX_PREFIXES + 1))
    return (f"case when {info} is not null and length({rest}) <= {_MAX_NSN} and {kept} "
            f"and substr({info}, 1 + length({rest}), 1) = '1' then '+' || {digits} end")


def national(digits: str, region: str, prepare: Prepare) -> str | None:
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
        return prepare(f"regexp_full_match({expr}, {_quoted(here.pattern)})", "phone_fits")

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
            f"or regexp_matches({digits}, {_quoted('^(?:' + idd + ')')}) then null "
            f"{' '.join(branches)} else {formatted(digits)} end")

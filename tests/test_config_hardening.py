"""Config values through the real CLI and the Python API, with generated inputs (issue 16, classes 8 and 12):
numbers and durations, URL ports, files that are not UTF-8, macro arguments, and `.env` per project.

A refused value is exit 2 with one stderr line naming the file and the key, never a traceback; an accepted
one runs (a dry run: the values are read and used, nothing is sent)."""

from __future__ import annotations

import datetime as dt
import math
import os
import json
import re
import string
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cli_helpers import cli
from connector.config import load_project
from connector.dialects import DATE_UNITS

SETTINGS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# key path → (lowest, highest, whole number): the ranges the README's connector.yml reference documents.
NUMERIC_KEYS: dict[tuple[str, ...], tuple[float, float, bool]] = {
    ("tiktok", "timeout_seconds"): (0.1, 3600, False),
    ("tiktok", "max_attempts"): (1, 100, True),
    ("tiktok", "max_retry_seconds"): (0, 86400, False),
    ("tiktok", "max_in_flight"): (1, 64, True),
    ("syncs", "orders", "attribution_window_days"): (1, 28, True),
    ("syncs", "orders", "future_tolerance_seconds"): (0, 86400, True),
    ("syncs", "orders", "batch_size"): (1, 1000, True),
    ("syncs", "orders", "safety_margin_seconds"): (0, 7 * 86400, True),
    ("syncs", "orders", "max_reject_rate"): (0, 1, False),
    ("warehouse", "threads"): (1, 256, True),
}
LOOKBACK = ("syncs", "orders", "lookback")
MAX_LOOKBACK_SECONDS = 366 * 86400

NO_DOLLAR = st.characters(codec="utf-8", exclude_characters="$", exclude_categories=("Cs",))
NUMBER_LIKE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2, max_value=4000),
    st.integers(min_value=-5, max_value=1100),
    st.integers(),
    st.integers(min_value=10 ** 17, max_value=10 ** 400),
    st.integers(min_value=-(10 ** 400), max_value=-(10 ** 17)),
    st.booleans(),
    st.none(),
    st.text(NO_DOLLAR, max_size=12),
    st.sampled_from(["nan", "NaN", "inf", "-Infinity", "1e30", "1e400", "-1e400", "0x10", "5", " 7 ", "1_000",
                     "0.5", "3600.0001", "true", "", "50%", "1,5", "٣"]),
)


def in_range(path: tuple[str, ...]) -> st.SearchStrategy[Any]:
    lowest, highest, whole = NUMERIC_KEYS[path]
    numbers = (st.integers(min_value=int(math.ceil(lowest)), max_value=int(highest)) if whole
               else st.floats(min_value=lowest, max_value=highest))
    return st.one_of(numbers, numbers.map(str), st.sampled_from([lowest, highest]))


KEY_AND_VALUE = st.sampled_from(sorted(NUMERIC_KEYS)).flatmap(
    lambda path: st.tuples(st.just(path), st.one_of(NUMBER_LIKE, in_range(path))))
DURATION_LIKE = st.one_of(
    st.tuples(st.integers(min_value=0, max_value=10 ** 7), st.sampled_from(["", "s", "m", "h", "d", " d"]))
    .map(lambda pair: f"{pair[0]}{pair[1]}"),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(NO_DOLLAR, max_size=10),
    st.sampled_from(["800000d", "366d", "367d", "31622400", "31622401", "9" * 20 + "d", "1.5h", "-1d", "2w",
                     "nan", "inf", "1e30"]),
)


def is_accepted_number(value: Any, lowest: float, highest: float, whole: bool) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(number) and lowest <= number <= highest and (not whole or number.is_integer())


def is_accepted_duration(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    match = re.fullmatch(r"([0-9]{1,15})\s*([smhd]?)", str(value).strip())
    if not match:
        return False
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)] <= MAX_LOOKBACK_SECONDS


def config_of(project) -> dict[str, Any]:
    return yaml.safe_load((project.root / "connector.yml").read_text(encoding="utf-8"))


def write_config(project, data: dict[str, Any]) -> None:
    (project.root / "connector.yml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def with_value(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = yaml.safe_load(yaml.safe_dump(data))
    section = copy
    for key in path[:-1]:
        section = section.setdefault(key, {})
    section[path[-1]] = value
    return copy


def assert_config_error(code: int, out: str, err: str, *fragments: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    if out:  # --json: the error is also one JSON object on stdout, and nothing else is there
        [printed] = [json.loads(line) for line in out.splitlines()]
        assert printed["status"] == "error" and printed["exit_code"] == 2 and printed["error"], printed
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def recent_rows(order, count: int = 2) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.timezone.utc)
    return [order(n, now=now, ordered_at=now - dt.timedelta(hours=2)) for n in range(1, count + 1)]


# ---------------------------------------------------------------- numbers and durations

def test_every_numeric_key_is_refused_with_its_name_or_runs(make_project, order, capsys) -> None:
    project = make_project(recent_rows(order))
    base = config_of(project)
    config_file = str(project.root.resolve() / "connector.yml")

    @SETTINGS
    @given(key_and_value=KEY_AND_VALUE)
    @example(key_and_value=(("tiktok", "timeout_seconds"), float("nan")))
    @example(key_and_value=(("syncs", "orders", "batch_size"), float("inf")))
    @example(key_and_value=(("tiktok", "max_in_flight"), 10 ** 30))
    @example(key_and_value=(("syncs", "orders", "safety_margin_seconds"), 10 ** 400))
    @example(key_and_value=(("syncs", "orders", "batch_size"), 2.5))
    @example(key_and_value=(("syncs", "orders", "max_reject_rate"), float("nan")))
    @example(key_and_value=(("tiktok", "max_attempts"), True))
    @example(key_and_value=(("syncs", "orders", "batch_size"), 1000))
    @example(key_and_value=(("tiktok", "timeout_seconds"), "3600"))
    def check(key_and_value: tuple[tuple[str, ...], Any]) -> None:
        path, value = key_and_value
        write_config(project, with_value(base, path, value))
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run", "--json")
        if is_accepted_number(value, *NUMERIC_KEYS[path]):
            assert code == 0, (path, value, err)
            assert "Traceback" not in err
        else:
            assert_config_error(code, out, err, config_file, ".".join(path))

    check()


def test_lookback_is_refused_with_a_range_or_runs(make_project, order, capsys) -> None:
    project = make_project(recent_rows(order))
    base = config_of(project)

    @SETTINGS
    @given(value=DURATION_LIKE)
    @example(value="800000d")
    @example(value="366d")
    @example(value="2h")
    def check(value: Any) -> None:
        write_config(project, with_value(base, LOOKBACK, value))
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run", "--json")
        if is_accepted_duration(value):
            assert code == 0, (value, err)
        else:
            assert_config_error(code, out, err, "connector.yml: syncs.orders.lookback", "366d")

    check()


def test_an_integer_too_long_for_python_is_a_config_error(make_project, capsys) -> None:
    project = make_project()
    text = (project.root / "connector.yml").read_text()
    (project.root / "connector.yml").write_text(text + "batch_size: " + "9" * 5000 + "\n")
    code, out, err = cli(capsys, "sync", "--project", str(project.root))
    assert_config_error(code, out, err, str(project.root.resolve() / "connector.yml"), "not valid YAML")


# ---------------------------------------------------------------- URL ports

PORT_TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="/?#@[]$\n\r", exclude_categories=("Cs",)),
            min_size=1, max_size=8),
    st.integers(min_value=65536, max_value=10 ** 12).map(str),
    st.sampled_from(["abc", "54 32", "-1", "+5432", "5432x", "٣", "1_0", "99999"]),
)


def is_port(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9]{1,5}", text)) and int(text) <= 65535


def test_a_url_port_that_is_not_a_number_is_refused_without_the_password(make_project, capsys) -> None:
    project = make_project()
    base = config_of(project)
    password = "S3cretPassw0rd"
    urls = {
        ("warehouse", "url"): "postgresql://postgres:" + password + "@127.0.0.1:{port}/test",
        ("state", "url"): "postgresql+psycopg2://postgres:" + password + "@localhost:{port}/test?sslmode=disable",
        ("warehouse", "url", "snowflake"): "snowflake://me:" + password + "@acct:{port}/DB/PUBLIC?warehouse=WH",
    }

    @SETTINGS
    @given(key=st.sampled_from(sorted(urls)), port=PORT_TEXT)
    def check(key: tuple[str, ...], port: str) -> None:
        if is_port(port.strip()) or not port.strip():
            return  # a real port: the driver would try to connect, which is not what this test is about
        data = with_value(base, key[:2], urls[key].format(port=port))
        write_config(project, data)
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run")
        assert_config_error(code, out, err, f"connector.yml: {key[0]}.url", "port")
        assert password not in err

    check()


# ---------------------------------------------------------------- files that are not UTF-8

INVALID_UTF8 = st.one_of(
    st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf",
                     b"\xf4\x90\x80\x80", b"caf\xe9"]),
    st.binary(min_size=1, max_size=8).filter(lambda data: not _decodes(data)),
)


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_a_project_file_that_is_not_utf8_is_named_with_its_line(make_project, capsys) -> None:
    project = make_project(query="select * from orders\n{% include 'included.sql' %}\n")
    (project.root / "queries" / "included.sql").write_text("where total > 0 -- é\n", encoding="utf-8")
    (project.root / ".env").write_text("H3_UNUSED=1\n", encoding="utf-8")
    files = ["connector.yml", "mappings/orders.yml", "queries/orders.sql", "queries/included.sql", ".env"]
    originals = {name: (project.root / name).read_bytes() for name in files}
    code, _, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run")
    assert code == 0, err  # the project is valid as written

    @SETTINGS
    @given(name=st.sampled_from(files), bad=INVALID_UTF8, where=st.floats(min_value=0, max_value=1))
    def check(name: str, bad: bytes, where: float) -> None:
        original = originals[name]
        cut = original.rfind(b"\n", 0, int(len(original) * where)) + 1  # at the start of a line
        spoiled = original[:cut] + bad + original[cut:]
        path = project.root / name
        path.write_bytes(spoiled)
        try:
            code, out, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run")
        finally:
            path.write_bytes(original)
        start = _first_bad_byte(spoiled)
        line = spoiled.count(b"\n", 0, start) + 1
        assert_config_error(code, out, err, f"{project.root.resolve() / name}:{line}", "not UTF-8",
                            f"offset {start}", "save it as UTF-8")

    check()


def _first_bad_byte(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    raise AssertionError("valid UTF-8")


# ---------------------------------------------------------------- macro arguments

def test_macro_values_are_checked_not_pasted(make_project, order, capsys) -> None:
    query = ("select * from orders where updated_at >= {{ dateadd(vars.unit, -1, 'current_timestamp') }}\n"
             "and ordered_at >= {{ days_ago(vars.days) }}\n")
    project = make_project(recent_rows(order), query=query)
    base = config_of(project)
    query_file = str(project.root.resolve() / "queries" / "orders.sql")

    @settings(SETTINGS, max_examples=25)
    @given(unit=st.one_of(st.sampled_from(DATE_UNITS + ("DAY", "fortnight", "day; drop table orders; --")),
                          st.text(NO_DOLLAR, max_size=10)),
           days=st.one_of(st.integers(min_value=-10 ** 5, max_value=10 ** 5), st.floats(-1e5, 1e5),
                          st.sampled_from([math.nan, math.inf, True, False, None]), st.text(NO_DOLLAR, max_size=5),
                          st.sampled_from(["30", " 7 ", "-2", "3; drop table orders", "1e3"])))
    def check(unit: Any, days: Any) -> None:
        write_config(project, with_value(base, ("syncs", "orders", "vars"), {"unit": unit, "days": days}))
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run")
        if isinstance(unit, str) and unit.lower() in DATE_UNITS and is_whole(days):
            assert code == 0, (unit, days, err)
        else:
            assert_config_error(code, out, err, query_file)
        assert project.query("select count(*) from orders")[0][0] == 2

    check()


def is_whole(value: Any) -> bool:
    """What days_ago takes: a whole number, as an int, an integral float or digits."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str) and bool(re.fullmatch(r"\s*[-+]?[0-9]{1,18}\s*", value))


def test_phone_regions_are_checked_in_config_and_in_macros(make_project, capsys) -> None:
    project = make_project(sync_overrides={"default_phone_region": "XX", "hash_in_warehouse": True})
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run")
    assert_config_error(code, out, err, "connector.yml: syncs.orders.default_phone_region", "'XX'")

    project = make_project(query="select *, {{ hashed_phone('phone', vars.region) }} as h from orders\n",
                           sync_overrides={"vars": {"region": "'); drop table orders; --"}})
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--dry-run")
    assert_config_error(code, out, err, str(project.root.resolve() / "queries" / "orders.sql"), "hashed_phone")


# ---------------------------------------------------------------- .env per project

ENV_VALUE = st.text(string.ascii_letters + string.digits + "-_./:@+=", min_size=1, max_size=30)
ENV_LINE = st.sampled_from(["{key}={value} # the value for project {name}", "export {key}='{value}'",
                            '{key}="{value}"   # quoted', "{key} = {value}"])


def test_dotenv_values_stay_with_their_project(make_project, monkeypatch) -> None:
    monkeypatch.delenv("H3_PARTNER", raising=False)
    monkeypatch.delenv("H3_ONLY_IN_A", raising=False)
    tiktok = {"partner_name": "${H3_PARTNER:-none}", "test_event_code": "${H3_ONLY_IN_A:-unset}"}
    a, b = make_project(tiktok=tiktok), make_project(tiktok=tiktok)

    @SETTINGS
    @given(value_a=ENV_VALUE, value_b=ENV_VALUE, line_a=ENV_LINE, line_b=ENV_LINE, b_has_one=st.booleans())
    def check(value_a: str, value_b: str, line_a: str, line_b: str, b_has_one: bool) -> None:
        (a.root / ".env").write_text(line_a.format(key="H3_PARTNER", value=value_a, name="A") + "\n"
                                     + "H3_ONLY_IN_A=from-a  # a comment\n", encoding="utf-8")
        (b.root / ".env").write_text(line_b.format(key="H3_PARTNER", value=value_b, name="B") + "\n"
                                     if b_has_one else "OTHER=1\n", encoding="utf-8")
        environ = dict(os.environ)
        first, second, again = load_project(a.root), load_project(b.root), load_project(a.root)
        assert dict(os.environ) == environ  # nothing written into the process environment
        assert first.tiktok.partner_name == again.tiktok.partner_name == value_a  # comment and quotes gone
        assert first.tiktok.test_event_code == "from-a"
        assert second.tiktok.partner_name == (value_b if b_has_one else "none")  # never A's value
        assert second.tiktok.test_event_code == "unset"

    check()


def test_the_environment_wins_over_dotenv(make_project, monkeypatch) -> None:
    project = make_project(tiktok={"partner_name": "${H3_PARTNER}"})
    (project.root / ".env").write_text("H3_PARTNER=from-dotenv\n", encoding="utf-8")
    monkeypatch.setenv("H3_PARTNER", "from-environment")
    assert load_project(project.root).tiktok.partner_name == "from-environment"
    monkeypatch.delenv("H3_PARTNER")
    assert load_project(project.root).tiktok.partner_name == "from-dotenv"
    assert "H3_PARTNER" not in os.environ


def test_dotenv_token_and_base_url_reach_a_sync_through_the_cli(make_project, fake_tiktok, order, monkeypatch,
                                                                capsys) -> None:
    """The token and TIKTOK_API_BASE_URL in .env only (not in the environment) still send."""
    monkeypatch.delenv("TIKTOK_ACCESS_TOKEN")
    monkeypatch.delenv("TIKTOK_API_BASE_URL")
    project = make_project(recent_rows(order))
    (project.root / ".env").write_text(f"TIKTOK_ACCESS_TOKEN=test-token # from Events Manager\n"
                                       f"export TIKTOK_API_BASE_URL={fake_tiktok.base_url}\n", encoding="utf-8")
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0, err
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00002"]
    assert "TIKTOK_ACCESS_TOKEN" not in os.environ

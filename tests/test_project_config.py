"""connector.yml as a project: targets, typed ${VAR}s in vars, --vars, env_var() in templates, selection by
name, glob and tag, the audiences section, and the JSON Schema generated from the key definitions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from cli_helpers import cli, json_lines
from conftest import make_order, write_yaml
from connector import ConfigError, load_project, sync as api_sync
from connector import config_keys
from connector.config_schema import SCHEMA_FILE, json_schema, schema_text

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _doc(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "connector.yml").read_text(encoding="utf-8"))


def _rewrite(root: Path, **changes: Any) -> None:
    doc = _doc(root)
    doc.update(changes)
    write_yaml(root / "connector.yml", doc)


# ---------------------------------------------------------------- targets

def test_a_target_overrides_warehouse_tiktok_and_vars_key_by_key(make_project, fake_tiktok, capsys) -> None:
    project = make_project([make_order(1, now=_now()), make_order(2, now=_now())],
                           query="select * from orders where total >= {{ vars.min_total }}\n")
    (project.root / "other.duckdb").touch()
    _rewrite(project.root, vars={"min_total": 1000},
             targets={"dev": {"vars": {"min_total": 0}},
                      "prod": {"warehouse": {"url": "duckdb:///other.duckdb"},
                               "tiktok": {"access_token": "prod-token"}}},
             target="dev")
    dev = load_project(project.root)
    assert dev.target == "dev" and dev.vars == {"min_total": 0}
    assert dev.warehouse_url.endswith("warehouse.duckdb") and dev.tiktok.access_token == "test-token"
    assert dev.tiktok.timeout_seconds == 5  # keys the target does not name stay as the top level has them
    prod = load_project(project.root, target="prod")
    assert prod.target == "prod" and prod.warehouse_url.endswith("other.duckdb")
    assert prod.tiktok.access_token == "prod-token" and prod.vars == {"min_total": 1000}
    # Through the CLI: the default target (dev: min_total 0) sends both orders.
    code, out, _ = cli(capsys, "sync", "--json", "--project", str(project.root))
    assert code == 0 and json_lines(out)[0]["events_sent"] == 2


def test_the_target_comes_from_the_option_then_the_environment_then_the_file(make_project, monkeypatch) -> None:
    project = make_project()
    _rewrite(project.root, targets={"a": {"vars": {"t": "a"}}, "b": {"vars": {"t": "b"}},
                                    "c": {"vars": {"t": "c"}}}, target="a")
    assert load_project(project.root).vars["t"] == "a"
    monkeypatch.setenv("TIKTOK_CONNECTOR_TARGET", "b")
    assert load_project(project.root).vars["t"] == "b"
    assert load_project(project.root, target="c").vars["t"] == "c"


def test_unknown_target_and_target_without_targets_are_config_errors(make_project, fake_tiktok, capsys) -> None:
    project = make_project()
    code, _, err = cli(capsys, "sync", "--target", "prod", "--project", str(project.root))
    assert code == 2 and "targets" in err and "--target prod" in err and "Traceback" not in err
    _rewrite(project.root, targets={"production": {"tiktok": {"partner_name": "x"}}})
    code, _, err = cli(capsys, "sync", "--target", "prod", "--project", str(project.root))
    assert code == 2 and "no target named 'prod'" in err and "production" in err
    _rewrite(project.root, targets={"production": {"tiktok": {"partner_nme": "x"}}}, target="production")
    with pytest.raises(ConfigError, match="partner_nme.*unknown key"):
        load_project(project.root)


# ---------------------------------------------------------------- vars

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(-10 ** 12, 10 ** 12) | st.floats(allow_nan=False, allow_infinity=False, width=32)
       | st.booleans() | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"),
                                   max_size=20))
def test_a_whole_env_reference_in_vars_keeps_the_type_it_spells(make_project, monkeypatch, value) -> None:
    project = make_project()
    text = str(value).lower() if isinstance(value, bool) else (repr(value) if isinstance(value, float) else str(value))
    monkeypatch.setenv("MIN_TOTAL", text)
    _rewrite(project.root, vars={"min_total": "${MIN_TOTAL}", "label": "total>=${MIN_TOTAL}",
                                 "nested": {"list": ["${MIN_TOTAL}"]}, "fallback": "${UNSET_VAR_X:-7}"})
    loaded = load_project(project.root).vars
    assert loaded["label"] == f"total>={text}"  # inside a longer string: text
    assert loaded["fallback"] == 7
    expected = yaml.safe_load(text) if re.fullmatch(r"\s*(-?[0-9]+|true|false)\s*", text) else None
    if isinstance(value, bool):
        assert loaded["min_total"] is value
    elif isinstance(value, int):
        assert loaded["min_total"] == value and type(loaded["min_total"]) is int
    elif isinstance(value, float):
        assert loaded["min_total"] == pytest.approx(float(text)) and isinstance(loaded["min_total"], (int, float))
    elif expected is None:
        assert isinstance(loaded["min_total"], (str, int, float))
    assert loaded["nested"]["list"][0] == loaded["min_total"]


def test_vars_merge_project_then_sync_then_cli(make_project, fake_tiktok, capsys, now) -> None:
    project = make_project([make_order(1, now=now, total=5), make_order(2, now=now, total=50)],
                           query="select * from orders where total >= {{ vars.min_total + vars.extra }}\n",
                           sync_overrides={"vars": {"extra": 1}})
    _rewrite(project.root, vars={"min_total": "${MIN_TOTAL:-0}", "extra": 1000})
    assert load_project(project.root).syncs["orders"].vars == {"min_total": 0, "extra": 1}
    code, out, err = cli(capsys, "sync", "--dry-run", "--json", "--vars", '{"min_total": 10}',
                         "--project", str(project.root))
    assert code == 0, err
    assert json_lines(out)[0]["rows_read"] == 1  # 10 + 1: only the order of 50
    code, _, err = cli(capsys, "sync", "--dry-run", "--vars", "[1, 2]", "--project", str(project.root))
    assert code == 2 and "--vars" in err and "mapping" in err


def test_env_var_in_a_template_reads_the_project_environment(make_project, fake_tiktok, capsys, now,
                                                             monkeypatch) -> None:
    project = make_project([make_order(1, now=now, currency="USD"), make_order(2, now=now, currency="EUR")],
                           query="select * from orders where currency = '{{ env_var('SHOP_CURRENCY', 'USD') }}'\n")
    code, out, _ = cli(capsys, "sync", "--dry-run", "--json", "--project", str(project.root))
    assert code == 0 and json_lines(out)[0]["rows_read"] == 1
    (project.root / ".env").write_text("SHOP_CURRENCY=EUR\n", encoding="utf-8")
    code, out, _ = cli(capsys, "sync", "--dry-run", "--json", "--project", str(project.root))
    assert code == 0 and json_lines(out)[0]["rows_read"] == 1
    (project.root / "queries" / "orders.sql").write_text("select * from orders where x = '{{ env_var('NOPE_X') }}'")
    code, _, err = cli(capsys, "sync", "--dry-run", "--project", str(project.root))
    assert code == 2 and "orders.sql" in err and "NOPE_X" in err and "Traceback" not in err


# ---------------------------------------------------------------- selection

def _three_syncs(root: Path) -> None:
    doc = _doc(root)
    base = doc["syncs"]["orders"]
    doc["syncs"] = {"orders_daily": {**base, "tags": ["daily"]}, "orders_hourly": {**base, "tags": ["hourly", "crm"]},
                    "leads": {**base, "tags": "daily"}}
    write_yaml(root / "connector.yml", doc)


@pytest.mark.parametrize(("select", "exclude", "expected"), [
    (None, None, ["orders_daily", "orders_hourly", "leads"]),
    (["tag:daily"], None, ["orders_daily", "leads"]),
    (["orders_*"], None, ["orders_daily", "orders_hourly"]),
    (["orders_*"], ["tag:crm"], ["orders_daily"]),
    (None, ["leads"], ["orders_daily", "orders_hourly"]),
    (["leads", "tag:hourly"], None, ["leads", "orders_hourly"]),
    (["sync:*"], ["orders_hourly"], ["orders_daily", "leads"]),
])
def test_select_and_exclude(make_project, select, exclude, expected) -> None:
    project = make_project()
    _three_syncs(project.root)
    chosen = load_project(project.root).select(None, select, exclude)
    assert [job.name for job in chosen] == expected


def test_select_through_the_cli_and_the_api(make_project, fake_tiktok, capsys, now) -> None:
    project = make_project([make_order(1, now=now)])
    _three_syncs(project.root)
    code, out, _ = cli(capsys, "sync", "--dry-run", "--json", "--select", "tag:daily", "--exclude", "leads",
                       "--project", str(project.root))
    assert code == 0 and [r["sync"] for r in json_lines(out)] == ["orders_daily"]
    reports = api_sync(project.root, select=["tag:hourly"])
    assert [r.sync for r in reports] == ["orders_hourly"] and reports[0].ok
    for selector in ("tag:weekly", "ordrs_*", "color:red"):
        code, _, err = cli(capsys, "sync", "--select", selector, "--project", str(project.root))
        assert code == 2 and selector in err and "Traceback" not in err


# ---------------------------------------------------------------- audiences section

AUDIENCE = {"query": "vip.sql", "advertiser_id": "7000000000000000001", "audience_name": "VIP buyers",
            "member_id": "customer_id", "identifiers": {"email": "email", "phone": "phone"}}


def test_an_audience_is_read_with_its_defaults_and_the_project_defaults(make_project) -> None:
    project = make_project()
    _rewrite(project.root, audiences={"vip": dict(AUDIENCE, tags=["daily"])}, default_phone_region="GB",
             max_reject_rate=0.2, batch_size=500,
             tiktok={**_doc(project.root)["tiktok"], "audience_access_token": "${AUDIENCE_TOKEN:-}"})
    loaded = load_project(project.root)
    vip = loaded.audiences["vip"]
    assert (vip.kind, vip.mode, vip.phone_format, vip.batch_size, vip.max_delete_fraction) == \
        ("audience", "mirror", "digits", 5000, 0.5)  # batch_size at the top level is the syncs' (≤ 1000)
    assert vip.default_phone_region == "GB" and vip.max_reject_rate == 0.2 and vip.tags == ("daily",)
    assert vip.identifiers == {"email": "email", "phone": "phone"}
    assert [job.name for job in loaded.select(None, ["audience:*"])] == ["vip"]
    assert [job.name for job in loaded.select()] == ["orders", "vip"]
    with pytest.raises(ConfigError, match="audience_access_token"):
        loaded.require_audience_token()


@pytest.mark.parametrize(("change", "message"), [
    ({"identifiers": {"emial": "email"}}, "unknown key"),
    ({"identifiers": {}}, "identifiers"),
    ({"member_id": None}, "member_id: missing"),
    ({"advertiser_id": None}, "advertiser_id: missing"),
    ({"advertiser_id": 7.0e18}, "not an id"),
    ({"audience_name": None}, "audience_name: missing"),
    ({"audience_name": "x" * 129}, "128"),
    ({"mode": "sync"}, "not one of add_only, mirror"),
    ({"batch_size": 20000}, "out of range"),
    ({"max_delete_fraction": 1.5}, "out of range"),
])
def test_audience_mistakes_name_the_key(make_project, change, message) -> None:
    project = make_project()
    audience = {**AUDIENCE, **change}
    _rewrite(project.root, audiences={"vip": {k: v for k, v in audience.items() if v is not None}})
    with pytest.raises(ConfigError, match=re.escape("audiences.vip.")) as raised:
        load_project(project.root)
    assert message in str(raised.value)


def test_a_name_is_a_sync_or_an_audience_not_both(make_project) -> None:
    project = make_project()
    _rewrite(project.root, audiences={"orders": AUDIENCE})
    with pytest.raises(ConfigError, match="unique across syncs and audiences"):
        load_project(project.root)


# ---------------------------------------------------------------- the JSON Schema

def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), \
        "regenerate: python -c 'from connector.config_schema import *; SCHEMA_FILE.write_text(schema_text())'"
    jsonschema.Draft7Validator.check_schema(json_schema())


def test_every_key_the_loader_knows_is_in_the_schema() -> None:
    properties = SCHEMA["properties"]
    assert set(properties) == set(config_keys.TOP) | set(config_keys.DEFAULTABLE)
    for section, definitions in (("warehouse", config_keys.WAREHOUSE), ("state", config_keys.STATE),
                                 ("tiktok", config_keys.TIKTOK)):
        assert set(properties[section]["properties"]) == set(definitions)
    assert set(properties["syncs"]["additionalProperties"]["properties"]) == set(config_keys.SYNC)
    assert set(properties["audiences"]["additionalProperties"]["properties"]) == set(config_keys.AUDIENCE)


def _example_configs() -> list[tuple[str, dict[str, Any]]]:
    """Every connector.yml in the repository, and every README/docs YAML block that is a whole project."""
    found = [(str(path.relative_to(ROOT)), yaml.safe_load(path.read_text(encoding="utf-8")))
             for path in sorted(ROOT.rglob("connector.yml")) if ".venv" not in path.parts and ".ci" not in path.parts]
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if not doc.is_file():
            continue
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and "warehouse" in data and ("syncs" in data or "audiences" in data):
                found.append((f"{doc.relative_to(ROOT)} block {i}", data))
    return found


@pytest.mark.parametrize(("name", "document"), _example_configs(), ids=lambda value: value
                         if isinstance(value, str) else "")
def test_every_example_config_is_valid_for_the_schema(name, document) -> None:
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(document), key=str)
    assert not errors, f"{name}: {[error.message for error in errors]}"


def test_example_configs_exist() -> None:
    assert len(_example_configs()) >= 2


def test_the_schema_refuses_what_the_loader_refuses(make_project) -> None:
    project = make_project()
    document = _doc(project.root)
    for path, value in ((("syncs", "orders", "batch_sise"), 5), (("tiktok", "timeout_seconds"), 0),
                        (("syncs", "orders", "event_source"), "pixel"), (("warehouse",), {"memory_limit": "1GB"})):
        broken = json.loads(json.dumps(document))
        target = broken
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        assert list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken)), path
        write_yaml(project.root / "connector.yml", broken)
        with pytest.raises(ConfigError):
            load_project(project.root)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from([("tiktok", name) for name, key in config_keys.TIKTOK.items()
                            if key.kind in ("int", "float")]
                           + [("sync", name) for name, key in config_keys.SYNC.items() if key.kind in ("int", "float")]),
       value=st.integers(-10 ** 6, 10 ** 6) | st.floats(-1e6, 1e6, allow_nan=False) | st.booleans())
def test_for_numbers_the_schema_accepts_what_the_loader_accepts(make_project, key, value) -> None:
    project = make_project()
    document = _doc(project.root)
    section, name = key
    (document["tiktok"] if section == "tiktok" else document["syncs"]["orders"])[name] = value
    write_yaml(project.root / "connector.yml", document)
    try:
        load_project(project.root)
        loader_ok = True
    except ConfigError:
        loader_ok = False
    schema_ok = not list(jsonschema.Draft7Validator(SCHEMA).iter_errors(document))
    if loader_ok:
        assert schema_ok, (key, value)
    elif not isinstance(value, bool) and not (isinstance(value, float) and not value.is_integer()):
        assert not schema_ok, (key, value)


def _now():
    import datetime as dt
    return dt.datetime.now(dt.timezone.utc)

"""connector.yml: load, expand ${VAR}s, validate, and hand out typed project and sync settings."""

from __future__ import annotations

import difflib
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values

from .errors import ConfigError
from .files import load_yaml, read_utf8
from .identifiers import SCHEMA_HINT, schema_problem
from .tiktok_spec import DEFAULT_BASE_URL, EVENT_SOURCES, MAX_EVENTS_PER_REQUEST

CONFIG_FILE = "connector.yml"
BASE_URL_ENV = "TIKTOK_API_BASE_URL"
_DURATION = re.compile(r"^([0-9]{1,15})\s*([smhd]?)$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LOOKBACK_DAYS = 366
# SQLAlchemy's reading of scheme://user:password@host:port/...: the port is what follows the host.
_URL_PORT = re.compile(r"[\w+]+://(?:[^:/]*(?::[^@]*)?@)?(?:\[[^/?]+\]|[^/:?]*)(?::(?P<port>[^/?]*))?")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class TikTokSettings:
    access_token: str | None
    base_url: str
    test_event_code: str | None
    partner_name: str | None = None
    timeout_seconds: float = 30.0
    max_attempts: int = 8
    max_retry_seconds: float = 300.0
    max_in_flight: int = 16
    token_hint: str = "set tiktok.access_token in connector.yml, e.g. ${TIKTOK_ACCESS_TOKEN}"


@dataclass(frozen=True)
class SyncSettings:
    name: str
    query: str
    mapping: str | None
    event_source: str
    event_source_id: str | None
    cursor: str
    attribution_window_days: int = 28
    future_tolerance_seconds: int = 300
    batch_size: int = MAX_EVENTS_PER_REQUEST
    default_phone_region: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    lookback_seconds: int = 0
    safety_margin_seconds: int = 30
    hash_in_warehouse: bool = False
    max_reject_rate: float = 0.1
    alert_webhook_url: str | None = None


@dataclass(frozen=True)
class Project:
    root: Path
    config_path: Path
    warehouse_url: str
    state_url: str | None
    state_schema: str | None
    tiktok: TikTokSettings
    syncs: dict[str, SyncSettings]
    warehouse_options: dict[str, str] = field(default_factory=dict)

    @property
    def queries_dir(self) -> Path:
        return self.root / "queries"

    @property
    def mappings_dir(self) -> Path:
        return self.root / "mappings"

    def select(self, names: list[str] | None) -> list[SyncSettings]:
        if not names:
            return list(self.syncs.values())
        for name in names:
            if name not in self.syncs:
                raise ConfigError(str(self.config_path), f"no sync named {name!r}", _did_you_mean(name, self.syncs))
        return [self.syncs[name] for name in names]

    def require_token(self) -> str:
        if not self.tiktok.access_token:
            raise ConfigError(f"{self.config_path}: tiktok.access_token", "no access token", self.tiktok.token_hint)
        return self.tiktok.access_token


_TOP_KEYS = {"warehouse", "tiktok", "state", "syncs"}
_WAREHOUSE_KEYS = {"url", "private_key_path", "private_key_passphrase", "authenticator", "memory_limit", "threads"}
_DUCKDB_ONLY_KEYS = ("memory_limit", "threads")  # DuckDB is the one warehouse that runs in this process
_STATE_KEYS = {"url", "schema"}
_TIKTOK_KEYS = {"access_token", "base_url", "test_event_code", "partner_name", "timeout_seconds",
                "max_attempts", "max_retry_seconds", "max_in_flight"}
_SYNC_KEYS = {"query", "mapping", "event_source", "event_source_id", "cursor", "attribution_window_days",
              "future_tolerance_seconds", "batch_size", "default_phone_region", "vars", "lookback",
              "safety_margin_seconds", "hash_in_warehouse", "max_reject_rate", "alert_webhook_url"}
# Sync settings a project may set once at the top level as the default for every sync.
_SYNC_DEFAULT_KEYS = _SYNC_KEYS - {"query", "mapping", "cursor"}


def load_project(root: str | os.PathLike[str] = ".") -> Project:
    """Read `connector.yml` in `root`; raise ConfigError naming the file and key on any mistake."""
    root_path = Path(root).resolve()
    env = project_environment(root_path)
    path = root_path / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(str(path), "file not found",
                          "run inside a project directory or pass --project DIR")
    raw = load_yaml(path)
    doc = _Section(str(path), "", raw if raw is not None else {}, env)
    doc.check_keys(_TOP_KEYS | _SYNC_DEFAULT_KEYS)

    warehouse = doc.section("warehouse")
    warehouse.check_keys(_WAREHOUSE_KEYS)
    warehouse_url = _resolve_url(warehouse.required_str("url", "e.g. url: duckdb:///warehouse.duckdb"), root_path)
    warehouse.check_url_port("url", warehouse_url)
    for key in _DUCKDB_ONLY_KEYS:
        if key in warehouse.data and not warehouse_url.startswith("duckdb://"):
            raise ConfigError(warehouse.where(key), "applies to DuckDB only",
                              "remove it: other warehouses run their queries in their own servers")
    threads = warehouse.integer("threads", 1, minimum=1, maximum=256) if "threads" in warehouse.data else None

    state = doc.section("state", optional=True)
    state.check_keys(_STATE_KEYS)
    state_url = state.optional_str("url")
    if state_url:
        state.check_url_port("url", state_url)

    defaults = {key: doc.data[key] for key in _SYNC_DEFAULT_KEYS if key in doc.data}
    syncs_section = doc.section("syncs")
    if not syncs_section.data:
        raise ConfigError(f"{path}: syncs", "no syncs defined", "add one under syncs:, see README")
    syncs = {name: _sync(name, syncs_section.section(name), defaults) for name in syncs_section.data}
    return Project(
        root=root_path,
        config_path=path,
        warehouse_url=warehouse_url,
        state_url=_resolve_url(state_url, root_path) if state_url else None,
        state_schema=state.schema_name("schema", state_url or warehouse_url),
        tiktok=_tiktok(doc.section("tiktok", optional=True)),
        syncs=syncs,
        warehouse_options={key: value for key in _WAREHOUSE_KEYS - {"url"}
                           if (value := warehouse.optional_str(key)) is not None}
                          | ({"threads": str(threads)} if threads is not None else {}),
    )


def project_environment(root: Path) -> dict[str, str]:
    """What `${VAR}` sees in a project: the process environment first, then the project's `.env`.

    The .env is parsed for this project only and never written into os.environ, so two projects loaded
    in one process (an Airflow worker) do not see each other's values."""
    path = root / ".env"
    values: dict[str, str] = {}
    if path.is_file():
        parsed = dotenv_values(stream=io.StringIO(read_utf8(path)))
        values = {key: value for key, value in parsed.items() if value is not None}
    return {**values, **os.environ}


def _tiktok(section: _Section) -> TikTokSettings:
    section.check_keys(_TIKTOK_KEYS)
    base_url = section.env.get(BASE_URL_ENV) or section.optional_str("base_url") or DEFAULT_BASE_URL
    token_var = section.env_var_of("access_token")
    hint = (f"export {token_var}=<your Events API access token>" if token_var
            else "set tiktok.access_token in connector.yml, e.g. ${TIKTOK_ACCESS_TOKEN}")
    return TikTokSettings(
        access_token=section.optional_str("access_token"),
        base_url=base_url.rstrip("/"),
        test_event_code=section.optional_str("test_event_code"),
        partner_name=section.optional_str("partner_name"),
        timeout_seconds=section.number("timeout_seconds", 30.0, minimum=0.1, maximum=3600),
        max_attempts=section.integer("max_attempts", 8, minimum=1, maximum=100),
        max_retry_seconds=section.number("max_retry_seconds", 300.0, minimum=0, maximum=86400),
        max_in_flight=section.integer("max_in_flight", 16, minimum=1, maximum=64),
        token_hint=hint,
    )


def _sync(name: str, section: _Section, defaults: dict[str, Any]) -> SyncSettings:
    section.check_keys(_SYNC_KEYS)
    section.data = {**defaults, **section.data}
    event_source = section.optional_str("event_source") or "offline"
    if event_source not in EVENT_SOURCES:
        raise ConfigError(section.where("event_source"), f"{event_source!r} is not an event source",
                          f"use one of {', '.join(sorted(EVENT_SOURCES))}")
    event_source_id = section.data.get("event_source_id")
    if event_source_id is not None:
        event_source_id = section.expand(str(event_source_id), "event_source_id") or None
    variables = section.data.get("vars") or {}
    if not isinstance(variables, dict):
        raise ConfigError(section.where("vars"), "must be a mapping of names to values", "e.g. vars: {country: US}")
    return SyncSettings(
        name=name,
        query=section.required_str("query", f"e.g. query: {name}.sql (a file in queries/)"),
        mapping=section.optional_str("mapping"),
        event_source=event_source,
        event_source_id=event_source_id,
        cursor=section.required_str("cursor", "name the column that grows when a row changes, e.g. cursor: updated_at"),
        attribution_window_days=section.integer("attribution_window_days", 28, minimum=1, maximum=28),
        future_tolerance_seconds=section.integer("future_tolerance_seconds", 300, minimum=0, maximum=86400),
        batch_size=section.integer("batch_size", MAX_EVENTS_PER_REQUEST, minimum=1, maximum=MAX_EVENTS_PER_REQUEST),
        default_phone_region=section.phone_region("default_phone_region"),
        vars=variables,
        lookback_seconds=section.duration("lookback", 0, maximum_days=MAX_LOOKBACK_DAYS),
        safety_margin_seconds=section.integer("safety_margin_seconds", 30, minimum=0, maximum=7 * 86400),
        hash_in_warehouse=section.flag("hash_in_warehouse", False),
        max_reject_rate=section.number("max_reject_rate", 0.1, minimum=0, maximum=1),
        alert_webhook_url=section.optional_str("alert_webhook_url"),
    )


def _resolve_url(url: str, root: Path) -> str:
    """Relative DuckDB paths resolve against the project directory, not the working directory."""
    prefix = "duckdb:///"
    if url.startswith(prefix):
        path = url[len(prefix):]
        if path and path != ":memory:" and not path.startswith(":memory:") and not Path(path).is_absolute():
            return prefix + str(root / path)
    return url


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(options))}"


class _Section:
    """One mapping in connector.yml, with the dotted key path used in every error message."""

    def __init__(self, file: str, prefix: str, data: Any, env: dict[str, str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {prefix or 'top level'}", "must be a mapping of keys to values",
                              "check the indentation")
        self.file, self.prefix, self.data, self.env = file, prefix, data, env

    def where(self, key: str) -> str:
        return f"{self.file}: {self.prefix}{key}"

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise ConfigError(self.where(str(key)), "unknown key", _did_you_mean(str(key), allowed))

    def section(self, key: str, optional: bool = False) -> _Section:
        value = self.data.get(key)
        if value is None:
            if optional:
                return _Section(self.file, f"{self.prefix}{key}.", {}, self.env)
            raise ConfigError(self.where(key), "missing", f"add a '{key}:' section, see README")
        return _Section(self.file, f"{self.prefix}{key}.", value, self.env)

    def env_var_of(self, key: str) -> str | None:
        match = _ENV_REF.search(str(self.data.get(key) or ""))
        return match.group(1) if match else None

    def expand(self, text: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value is None:
                if default is None:
                    if key == "access_token":
                        return ""  # checked by Project.require_token, only when something is sent
                    raise ConfigError(self.where(key), f"environment variable {name} is not set",
                                      f"export {name}=... or write ${{{name}:-default}}")
                return default
            return value

        return _ENV_REF.sub(substitute, text)

    def optional_str(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, (dict, list)):
            raise ConfigError(self.where(key), "must be a single value", "quote it if it contains ': '")
        return self.expand(str(value), key).strip() or None

    def required_str(self, key: str, hint: str) -> str:
        value = self.optional_str(key)
        if not value:
            raise ConfigError(self.where(key), "missing", hint)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if isinstance(value, str):
            value = {"true": True, "false": False}.get(self.expand(value, key).strip().lower(), value)
        if not isinstance(value, bool):
            raise ConfigError(self.where(key), f"{value!r} is not true or false", f"e.g. {key}: true")
        return value

    def duration(self, key: str, default: int, maximum_days: int) -> int:
        """Seconds from `90`, `90s`, `15m`, `2h` or `1d`, at most `maximum_days`."""
        value = self.data.get(key, default)
        bounds = f"from 0 up to {maximum_days}d"
        match = None if isinstance(value, bool) else _DURATION.match(self.expand(str(value), key).strip())
        if not match:
            raise ConfigError(self.where(key), f"{_shown(value)} is not a duration",
                              f"e.g. 2h, 30m, 1d or seconds, {bounds}")
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
        if seconds > maximum_days * 86400:
            raise ConfigError(self.where(key), f"{_shown(value)} is out of range", f"use a duration {bounds}")
        return seconds

    def number(self, key: str, default: float, minimum: float, maximum: float, whole: bool = False) -> float:
        """A finite number in [minimum, maximum]; `whole`: without a fraction. Booleans are not numbers."""
        value = self.data.get(key, default)
        if isinstance(value, str):
            value = self.expand(value, key)
        bounds = f"{'a whole number' if whole else 'a number'} from {minimum:g} to {maximum:g}"
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
            raise ConfigError(self.where(key), f"{_shown(self.data.get(key))} is not a number",
                              f"use {bounds}, e.g. {key}: {default}") from None
        if not (math.isfinite(number) and minimum <= number <= maximum):
            raise ConfigError(self.where(key), f"{_shown(self.data.get(key))} is out of range", f"use {bounds}")
        if whole and not number.is_integer():
            raise ConfigError(self.where(key), f"{_shown(self.data.get(key))} is not a whole number", f"use {bounds}")
        return number

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        return int(self.number(key, default, minimum, maximum, whole=True))

    def check_url_port(self, key: str, url: str) -> None:
        """A port that is not a number from 0 to 65535 is refused here, before a driver fails on it.
        The URL is never shown: it may hold a password."""
        try:
            port = _port_text(url)
            valid = not port or (re.fullmatch(r"[0-9]{1,5}", port) is not None and int(port) <= 65535)
        except ValueError:  # urlsplit: characters that read as '/', '?', '#', '@' or ':' once normalized
            valid = False
        if not valid:
            raise ConfigError(self.where(key), "the port is not a number from 0 to 65535",
                              "write host:PORT with digits only, e.g. host:5432; URL-encode special characters "
                              "in the user and password (# as %23, / as %2F, @ as %40)")

    def schema_name(self, key: str, url: str) -> str | None:
        """The state schema: a plain identifier (`database.schema` on Snowflake), checked for `url`'s warehouse."""
        schema = self.optional_str(key)
        if schema is None:
            return None
        dialect = _dialect(url)
        problem = schema_problem(schema, dialect)
        if problem:
            raise ConfigError(self.where(key), problem, SCHEMA_HINT)
        return schema

    def phone_region(self, key: str) -> str | None:
        """A region code phonenumbers knows (US, GB…): it becomes a country code in hashing SQL too."""
        region = self.optional_str(key)
        if region is None:
            return None
        import phonenumbers
        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(self.where(key), f"{_shown(self.data.get(key))} is not a region code",
                              "a two-letter region such as US, GB or DE")
        return region


def _shown(value: Any) -> str:
    """A config value in a message: short, and as written (a ${VAR} stays unexpanded)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 30:
        return "a number too large"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _port_text(url: str) -> str | None:
    """The port of a URL as written, read the way the warehouse adapter that opens it reads it."""
    if url.startswith("duckdb://"):
        return None
    if url.startswith("snowflake://"):  # connector.snowflake_warehouse: urlsplit
        host = urlsplit(url).netloc.rpartition("@")[2]
        return host.partition(":")[2] if ":" in host else None
    match = _URL_PORT.match(url)  # SQLAlchemy: the password runs to the first '@'
    return match.group("port") if match else None


def _dialect(url: str) -> str:
    """The SQLAlchemy dialect name a URL selects (duckdb and snowflake have their own adapters)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    return "postgresql" if scheme in ("postgresql", "postgres") else scheme

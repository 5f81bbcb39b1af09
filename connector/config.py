"""connector.yml: load, expand ${VAR}s, validate, and hand out typed project and sync settings."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from . import redaction
from .errors import ConfigError
from .tiktok_spec import DEFAULT_BASE_URL, EVENT_SOURCES, MAX_EVENTS_PER_REQUEST

CONFIG_FILE = "connector.yml"
BASE_URL_ENV = "TIKTOK_API_BASE_URL"
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Environment variables whose values are masked in all output (a key's path or file name is not a secret).
_SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|PASSPHRASE|SECRET|KEY|CREDENTIAL)(?!.*_(PATH|FILE|DIR)$)",
                          re.IGNORECASE)
_TOKEN = re.compile(r"[!-~]+")  # visible ASCII: what an HTTP header can carry, and all a token ever is


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
    load_dotenv(root_path / ".env")
    path = root_path / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(str(path), "file not found",
                          "run inside a project directory or pass --project DIR")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(where, "not valid YAML", str(getattr(exc, "problem", exc))) from None
    doc = _Section(str(path), "", raw if raw is not None else {})
    doc.check_keys(_TOP_KEYS | _SYNC_DEFAULT_KEYS)

    warehouse = doc.section("warehouse")
    warehouse.check_keys(_WAREHOUSE_KEYS)
    warehouse_url = _resolve_url(warehouse.required_str("url", "e.g. url: duckdb:///warehouse.duckdb"), root_path)
    for key in _DUCKDB_ONLY_KEYS:
        if key in warehouse.data and not warehouse_url.startswith("duckdb://"):
            raise ConfigError(warehouse.where(key), "applies to DuckDB only",
                              "remove it: other warehouses run their queries in their own servers")

    state = doc.section("state", optional=True)
    state.check_keys(_STATE_KEYS)
    state_url = state.optional_str("url")

    defaults = {key: doc.data[key] for key in _SYNC_DEFAULT_KEYS if key in doc.data}
    syncs_section = doc.section("syncs")
    if not syncs_section.data:
        raise ConfigError(f"{path}: syncs", "no syncs defined", "add one under syncs:, see README")
    syncs = {name: _sync(name, syncs_section.section(name), defaults) for name in syncs_section.data}
    project = Project(
        root=root_path,
        config_path=path,
        warehouse_url=warehouse_url,
        state_url=_resolve_url(state_url, root_path) if state_url else None,
        state_schema=state.optional_str("schema"),
        tiktok=_tiktok(doc.section("tiktok", optional=True)),
        syncs=syncs,
        warehouse_options={key: value for key in _WAREHOUSE_KEYS - {"url"}
                           if (value := warehouse.optional_str(key)) is not None},
    )
    redaction.register(*configured_secrets(project))
    return project


def configured_secrets(project: Project) -> list[str]:
    """Every value of the project that must never be printed: the token, URL passwords, the key passphrase
    and alert webhook URLs (Slack's carry their secret in the path, which requests' errors quote alone)."""
    secrets = [project.tiktok.access_token, project.warehouse_options.get("private_key_passphrase")]
    for url in (project.warehouse_url, project.state_url):
        try:
            secrets.append(urlsplit(url).password if url else None)
        except ValueError:
            secrets.append(url)  # not parsable: mask it whole
    for hook in {sync.alert_webhook_url for sync in project.syncs.values()} - {None}:
        try:
            parts = urlsplit(hook)
            secrets += [hook, parts.path + (f"?{parts.query}" if parts.query else "")]
        except ValueError:
            secrets.append(hook)
    return [secret for secret in secrets if secret]


def load_dotenv(path: Path) -> None:
    """KEY=VALUE lines of a project's .env into the environment; variables already set win."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        key = key.removeprefix("export ").strip()
        if sep and key and not key.startswith("#"):
            os.environ.setdefault(key, value.strip().strip('"').strip("'"))


def _tiktok(section: _Section) -> TikTokSettings:
    section.check_keys(_TIKTOK_KEYS)
    base_url = os.environ.get(BASE_URL_ENV) or section.optional_str("base_url") or DEFAULT_BASE_URL
    token_var = section.env_var_of("access_token")
    hint = (f"export {token_var}=<your Events API access token>" if token_var
            else "set tiktok.access_token in connector.yml, e.g. ${TIKTOK_ACCESS_TOKEN}")
    return TikTokSettings(
        access_token=_access_token(section, token_var),
        base_url=base_url.rstrip("/"),
        test_event_code=section.optional_str("test_event_code"),
        partner_name=section.optional_str("partner_name"),
        timeout_seconds=section.number("timeout_seconds", 30.0, minimum=0.1),
        max_attempts=int(section.number("max_attempts", 8, minimum=1)),
        max_retry_seconds=section.number("max_retry_seconds", 300.0, minimum=0),
        max_in_flight=int(section.number("max_in_flight", 16, minimum=1, maximum=64)),
        token_hint=hint,
    )


def _access_token(section: _Section, token_var: str | None) -> str | None:
    """The token without the whitespace secret files often carry around it; anything an HTTP header cannot
    carry is refused here, before it can reach a request (whose errors would quote it)."""
    token = section.optional_str("access_token")  # stripped
    redaction.register(token)
    if token is None or _TOKEN.fullmatch(token):
        return token
    position, char = next((i, c) for i, c in enumerate(token, 1) if not _TOKEN.fullmatch(c))
    kind = ("a line break" if char in "\r\n" else "whitespace" if char.isspace() else
            "a non-ASCII character" if ord(char) > 127 else "a control character")
    source = f"the value of {token_var}" if token_var else "the value"
    raise ConfigError(section.where("access_token"), f"{source} has {kind} at position {position}",
                      "a token is visible ASCII with nothing in between: copy it again from TikTok Events Manager")


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
        attribution_window_days=int(section.number("attribution_window_days", 28, minimum=1, maximum=28)),
        future_tolerance_seconds=int(section.number("future_tolerance_seconds", 300, minimum=0)),
        batch_size=int(section.number("batch_size", MAX_EVENTS_PER_REQUEST, minimum=1, maximum=MAX_EVENTS_PER_REQUEST)),
        default_phone_region=(section.optional_str("default_phone_region") or None),
        vars=variables,
        lookback_seconds=section.duration("lookback", 0),
        safety_margin_seconds=int(section.number("safety_margin_seconds", 30, minimum=0)),
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

    def __init__(self, file: str, prefix: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {prefix or 'top level'}", "must be a mapping of keys to values",
                              "check the indentation")
        self.file, self.prefix, self.data = file, prefix, data

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
                return _Section(self.file, f"{self.prefix}{key}.", {})
            raise ConfigError(self.where(key), "missing", f"add a '{key}:' section, see README")
        return _Section(self.file, f"{self.prefix}{key}.", value)

    def env_var_of(self, key: str) -> str | None:
        match = _ENV_REF.search(str(self.data.get(key) or ""))
        return match.group(1) if match else None

    def expand(self, text: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is None:
                    if key == "access_token":
                        return ""  # checked by Project.require_token, only when something is sent
                    raise ConfigError(self.where(key), f"environment variable {name} is not set",
                                      f"export {name}=... or write ${{{name}:-default}}")
                return default
            if _SECRET_NAME.search(name):
                redaction.register(value)
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

    def duration(self, key: str, default: int) -> int:
        """Seconds from `90`, `90s`, `15m`, `2h` or `1d`."""
        value = self.data.get(key, default)
        match = _DURATION.match(self.expand(str(value), key).strip())
        if not match:
            raise ConfigError(self.where(key), f"{value!r} is not a duration", "e.g. 2h, 30m, 1d or seconds")
        return int(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]

    def number(self, key: str, default: float, minimum: float | None = None, maximum: float | None = None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, str):
            value = self.expand(value, key)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(self.where(key), f"{value!r} is not a number", f"e.g. {key}: {default}") from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            bounds = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
            raise ConfigError(self.where(key), f"{number:g} is out of range", f"use a value {bounds}")
        return number

"""connector.yml: load, pick the target, expand ${VAR}s, validate, and hand out typed settings.

Every key is defined once, in config_keys.py; this module reads a document with those definitions."""

from __future__ import annotations

import difflib
import fnmatch
import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values

from . import config_keys as keys, redaction
from .config_keys import Key
from .errors import ConfigError
from .files import load_yaml, read_utf8
from .identifiers import SCHEMA_HINT, schema_problem
from .ratelimit import DEFAULT_REQUESTS_PER_SECOND
from .tiktok_spec import DEFAULT_BASE_URL

CONFIG_FILE = "connector.yml"
BASE_URL_ENV = "TIKTOK_API_BASE_URL"
TARGET_ENV = "TIKTOK_CONNECTOR_TARGET"
_DURATION = re.compile(r"^([0-9]{1,15})\s*([smhd]?)$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LOOKBACK_DAYS = keys.MAX_LOOKBACK_DAYS
# SQLAlchemy's reading of scheme://user:password@host:port/...: the port is what follows the host.
_URL_PORT = re.compile(r"[\w+]+://(?:[^:/]*(?::[^@]*)?@)?(?:\[[^/?]+\]|[^/:?]*)(?::(?P<port>[^/?]*))?")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_WHOLE_ENV_REF = re.compile(r"^\s*\$\{[^}]*\}\s*$")
_TOKEN_KEYS = ("access_token", "audience_access_token")
_INTEGER = re.compile(r"^[-+]?[0-9]{1,30}$")
_DECIMAL = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$|^[-+]?[0-9]+[eE][-+]?[0-9]+$")
# Environment variables whose values are masked in all output (a key's path or file name is not a secret).
_SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|PASSPHRASE|SECRET|KEY|CREDENTIAL)(?!.*_(PATH|FILE|DIR)$)",
                          re.IGNORECASE)
_TOKEN = re.compile(r"[!-~]+")  # visible ASCII: what an HTTP header can carry, and all a token ever is


@dataclass(frozen=True)
class TikTokSettings:
    access_token: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    test_event_code: str | None = None
    partner_name: str | None = None
    timeout_seconds: float = 30.0
    max_attempts: int = 8
    max_retry_seconds: float = 300.0
    max_in_flight: int = 16
    max_requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    audience_access_token: str | None = field(default=None, repr=False)
    audience_max_requests_per_second: float = 10.0
    token_hint: str = "set tiktok.access_token in connector.yml, e.g. ${TIKTOK_ACCESS_TOKEN}"
    audience_token_hint: str = ("set tiktok.audience_access_token in connector.yml, "
                                "e.g. ${TIKTOK_AUDIENCE_ACCESS_TOKEN}")


@dataclass(frozen=True)
class SyncSettings:
    """One event sync (`syncs.NAME`)."""

    name: str
    query: str
    mapping: str | None
    event_source: str
    event_source_id: str | None
    cursor: str
    attribution_window_days: int = 28
    future_tolerance_seconds: int = 300
    batch_size: int = keys.MAX_EVENTS_PER_REQUEST
    default_phone_region: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    lookback_seconds: int = 0
    safety_margin_seconds: int = 30
    hash_in_warehouse: bool = False
    max_reject_rate: float = 0.1
    alert_webhook_url: str | None = field(default=None, repr=False)
    tags: tuple[str, ...] = ()
    kind = "sync"


@dataclass(frozen=True)
class AudienceSettings:
    """One Custom Audience kept equal to a query's people (`audiences.NAME`)."""

    name: str
    query: str
    advertiser_id: str
    member_id: str
    identifiers: dict[str, str]  # identifier kind (config_keys.IDENTIFIER_KINDS) → column
    audience_name: str | None = None
    audience_id: str | None = None
    mode: str = "mirror"
    phone_format: str = "digits"
    device_id_hash: str = "sha256"
    default_phone_region: str | None = None
    max_delete_fraction: float = 0.5
    batch_size: int = 5000
    hash_in_warehouse: bool = False
    max_reject_rate: float = 0.1
    alert_webhook_url: str | None = field(default=None, repr=False)
    vars: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    kind = "audience"


JobSettings = SyncSettings | AudienceSettings


@dataclass(frozen=True)
class Project:
    root: Path
    config_path: Path
    warehouse_url: str = field(repr=False)
    state_url: str | None = field(repr=False)
    state_schema: str | None
    tiktok: TikTokSettings
    syncs: dict[str, SyncSettings]
    warehouse_options: dict[str, str] = field(default_factory=dict, repr=False)
    audiences: dict[str, AudienceSettings] = field(default_factory=dict)
    target: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # what ${VAR} and env_var() read
    threads: int = 1  # jobs `sync` runs at once

    @property
    def queries_dir(self) -> Path:
        return self.root / "queries"

    @property
    def mappings_dir(self) -> Path:
        return self.root / "mappings"

    @property
    def jobs(self) -> dict[str, JobSettings]:
        """Every sync and audience by name, syncs first, each in the order connector.yml lists them."""
        return {**self.syncs, **self.audiences}

    def select(self, names: list[str] | None = None, select: list[str] | None = None,
               exclude: list[str] | None = None) -> list[JobSettings]:
        """The jobs to run: the named ones (all when neither names nor --select are given), those the
        selectors pick (`NAME`, a glob such as `orders_*`, `tag:daily`, `sync:*`, `audience:*`), minus the
        excluded ones. A name or selector that picks nothing is a mistake, not an empty run."""
        jobs = self.jobs
        for name in names or ():
            if name not in jobs:
                raise ConfigError(str(self.config_path), f"no sync or audience named {name!r}",
                                  _did_you_mean(name, jobs))
        chosen = list(names or ())
        for selector in select or ():
            chosen += self._matching(selector, "--select")
        if not names and not select:
            chosen = list(jobs)
        excluded = {name for selector in exclude or () for name in self._matching(selector, "--exclude")}
        return [jobs[name] for name in dict.fromkeys(chosen) if name not in excluded]

    def _matching(self, selector: str, option: str) -> list[str]:
        method, _, value = selector.partition(":") if ":" in selector else ("", "", selector)
        jobs = self.jobs
        if method == "tag":
            found = [name for name, job in jobs.items() if value in job.tags]
        elif method in ("sync", "audience"):
            found = [name for name, job in jobs.items() if job.kind == method and fnmatch.fnmatchcase(name, value)]
        elif method == "":
            found = [name for name in jobs if fnmatch.fnmatchcase(name, value)]
        else:
            raise ConfigError(f"{option} {selector}", f"unknown selector method {method!r}",
                              "use NAME, a glob like orders_*, tag:NAME, sync:NAME or audience:NAME")
        if not found:
            tags = sorted({tag for job in jobs.values() for tag in job.tags})
            known = f"tags: {', '.join(tags) or '(none)'}" if method == "tag" else _did_you_mean(value, jobs)
            raise ConfigError(f"{option} {selector}", "selects nothing", known)
        return found

    def require_token(self) -> str:
        if not self.tiktok.access_token:
            raise ConfigError(f"{self.config_path}: tiktok.access_token", "no access token", self.tiktok.token_hint)
        return self.tiktok.access_token

    def require_audience_token(self) -> str:
        if not self.tiktok.audience_access_token:
            raise ConfigError(f"{self.config_path}: tiktok.audience_access_token", "no audience access token",
                              self.tiktok.audience_token_hint)
        return self.tiktok.audience_access_token


def load_project(root: str | os.PathLike[str] = ".", target: str | None = None,
                 cli_vars: Mapping[str, Any] | None = None) -> Project:
    """Read `connector.yml` in `root`; raise ConfigError naming the file and key on any mistake.

    `target` picks one of `targets:` (default: the environment variable TIKTOK_CONNECTOR_TARGET, then the
    `target:` key); `cli_vars` (`--vars`) win over every `vars:` of the project, target and jobs."""
    root_path = Path(root).resolve()
    env = project_environment(root_path)
    path = root_path / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(str(path), "file not found",
                          "run inside a project directory or pass --project DIR")
    raw = load_yaml(path)
    doc = _Section(str(path), "", raw if raw is not None else {}, env)
    doc.check_keys(set(keys.TOP) | set(keys.DEFAULTABLE))
    target_name, doc = _with_target(doc, target or env.get(TARGET_ENV))

    warehouse = doc.section("warehouse")
    warehouse.check_keys(set(keys.WAREHOUSE))
    warehouse_url = _resolve_url(warehouse.read(keys.WAREHOUSE["url"]), root_path)
    for key in keys.DUCKDB_ONLY:
        if key in warehouse.data and not warehouse_url.startswith("duckdb://"):
            raise ConfigError(warehouse.where(key), "applies to DuckDB only",
                              "remove it: other warehouses run their queries in their own servers")
    options = {name: value for name, key in keys.WAREHOUSE.items() if name != "url"
               if (value := warehouse.read(key)) is not None}
    if "memory_limit" not in warehouse.data:  # unset: the connector sizes DuckDB per query (DuckDBWarehouse)
        options.pop("memory_limit", None)

    state = doc.section("state", optional=True)
    state.check_keys(set(keys.STATE))
    state_url = state.read(keys.STATE["url"])
    project_vars = {**doc.read(keys.TOP["vars"]), **(cli_vars or {})}
    defaults = {key: doc.data[key] for key in keys.DEFAULTABLE if key in doc.data}
    syncs = {name: _job(SyncSettings, keys.SYNC, name, section, defaults, project_vars, cli_vars)
             for name, section in doc.named_sections("syncs")}
    audiences = {name: _audience(name, section, defaults, project_vars, cli_vars)
                 for name, section in doc.named_sections("audiences")}
    for name in syncs.keys() & audiences.keys():
        raise ConfigError(f"{path}: audiences.{name}", "a sync has the same name",
                          "names are unique across syncs and audiences: rename one")
    if not syncs and not audiences:
        raise ConfigError(f"{path}: syncs", "no syncs or audiences defined", "add one under syncs:, see README")
    project = Project(
        root=root_path,
        config_path=path,
        warehouse_url=warehouse_url,
        state_url=_resolve_url(state_url, root_path) if state_url else None,
        state_schema=state.schema_name("schema", state_url or warehouse_url),
        tiktok=_tiktok(doc.section("tiktok", optional=True)),
        syncs=syncs,
        warehouse_options={name: str(value) for name, value in options.items()},
        audiences=audiences,
        target=target_name,
        vars=project_vars,
        env=env,
        threads=doc.read(keys.TOP["threads"]),
    )
    redaction.register(*configured_secrets(project))
    return project


def configured_secrets(project: Project) -> list[str]:
    """Every value of the project that must never be printed: the tokens and other secret keys, URL passwords,
    and alert webhook URLs (Slack's carry their secret in the path, which requests' errors quote alone)."""
    secrets = [getattr(project.tiktok, name) for name, key in keys.TIKTOK.items() if key.kind == "secret"]
    secrets += [project.warehouse_options.get(name) for name, key in keys.WAREHOUSE.items() if key.kind == "secret"]
    for url in (project.warehouse_url, project.state_url):
        try:
            secrets.append(urlsplit(url).password if url else None)
        except ValueError:
            secrets.append(url)  # not parsable: mask it whole
    for hook in {job.alert_webhook_url for job in project.jobs.values()} - {None}:
        try:
            parts = urlsplit(hook)
            secrets += [hook, parts.path + (f"?{parts.query}" if parts.query else "")]
        except ValueError:
            secrets.append(hook)
    return [secret for secret in secrets if secret]


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


def parse_vars(text: str, where: str = "--vars") -> dict[str, Any]:
    """`--vars '{"min_total": 10}'` (JSON, or YAML like `min_total: 10`) as a mapping."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(where, "not valid JSON or YAML", str(getattr(exc, "problem", None) or exc)) from None
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ConfigError(where, "must be a mapping of names to values", """e.g. --vars '{"min_total": 10}'""")
    return value


def _with_target(doc: _Section, wanted: str | None) -> tuple[str | None, _Section]:
    """The document with the chosen target's sections laid over the top-level ones, key by key."""
    targets = doc.section("targets", optional=True)
    name = wanted or doc.read(keys.TOP["target"])
    if not targets.data:
        if wanted:
            raise ConfigError(doc.where("targets"), f"no targets defined, so --target {wanted} cannot apply",
                              "add targets: {NAME: {warehouse: ..., tiktok: ...}} or drop --target")
        return None, doc
    if name is None:
        return None, doc
    if name not in targets.data:
        raise ConfigError(doc.where("target" if not wanted else "targets"), f"no target named {name!r}",
                          _did_you_mean(name, targets.data))
    chosen = targets.section(name)
    chosen.check_keys(set(keys.TARGET))
    data = dict(doc.data)
    for section_name in ("warehouse", "state", "tiktok", "vars"):
        override = chosen.data.get(section_name)
        if override is None:
            continue
        if not isinstance(override, dict):
            raise ConfigError(chosen.where(section_name), "must be a mapping of keys to values",
                              "check the indentation")
        data[section_name] = {**(doc.data.get(section_name) or {}), **override}
    return name, _Section(doc.file, "", data, doc.env)


def _tiktok(section: _Section) -> TikTokSettings:
    section.check_keys(set(keys.TIKTOK))
    base_url = section.env.get(BASE_URL_ENV) or section.read(keys.TIKTOK["base_url"]) or DEFAULT_BASE_URL
    values = {name: section.read(key) for name, key in keys.TIKTOK.items() if name != "base_url"}
    return TikTokSettings(**values, base_url=base_url.rstrip("/"),
                          token_hint=_token_hint(section, "access_token", "Events API access token"),
                          audience_token_hint=_token_hint(section, "audience_access_token",
                                                          "Marketing API access token"))


def _token_hint(section: _Section, key: str, what: str) -> str:
    variable = section.env_var_of(key)
    default = keys.TIKTOK[key].hint
    return f"export {variable}=<your {what}>" if variable else f"set tiktok.{key} in connector.yml, e.g. {default}"


def _job(settings: type, definitions: dict[str, Key], name: str, section: _Section, defaults: dict[str, Any],
         project_vars: dict[str, Any], cli_vars: Mapping[str, Any] | None) -> Any:
    """A sync's or audience's settings: its own keys, then the project's defaults, then each key's default."""
    section.check_keys(set(definitions))
    allowed = keys.DEFAULTABLE if settings is SyncSettings else keys.AUDIENCE_DEFAULTABLE
    section.data = {**{key: value for key, value in defaults.items() if key in allowed}, **section.data}
    values = {key.attribute: section.read(key) for key in definitions.values()}
    values["vars"] = {**project_vars, **values["vars"], **(cli_vars or {})}
    return settings(name=name, **values)


def _audience(name: str, section: _Section, defaults: dict[str, Any], project_vars: dict[str, Any],
              cli_vars: Mapping[str, Any] | None) -> AudienceSettings:
    audience: AudienceSettings = _job(AudienceSettings, keys.AUDIENCE, name, section, defaults, project_vars,
                                      cli_vars)
    if not audience.audience_id and not audience.audience_name:
        raise ConfigError(section.where("audience_name"), "missing",
                          "name the audience to create (audience_name: ...) or adopt one (audience_id: ...)")
    if audience.audience_name and len(audience.audience_name) > 128:
        raise ConfigError(section.where("audience_name"), "longer than 128 characters", "TikTok's limit is 128")
    return audience


def _check_token(section: _Section, key: str, token: str | None) -> None:
    """A token (stripped of the whitespace secret files often carry around it) holds nothing an HTTP header
    cannot carry: refused here, before it can reach a request (whose errors would quote it)."""
    if token is None or _TOKEN.fullmatch(token):
        return
    position, char = next((i, c) for i, c in enumerate(token, 1) if not _TOKEN.fullmatch(c))
    kind = ("a line break" if char in "\r\n" else "whitespace" if char.isspace() else
            "a non-ASCII character" if ord(char) > 127 else "a control character")
    variable = section.env_var_of(key)
    source = f"the value of {variable}" if variable else "the value"
    raise ConfigError(section.where(key), f"{source} has {kind} at position {position}",
                      "a token is visible ASCII with nothing in between: copy it again from TikTok")


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


def _typed(text: str) -> Any:
    """An expanded `${VAR}` as the value it spells: 10 → 10, 2.5 → 2.5, true/false → a boolean, else text.
    (Only a value that is one whole reference: `${MIN_TOTAL:-0}`, not `id_${X}`.)"""
    stripped = text.strip()
    if _INTEGER.match(stripped):
        return int(stripped)
    if _DECIMAL.match(stripped):
        number = float(stripped)
        return number if math.isfinite(number) else text
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


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

    def named_sections(self, key: str) -> list[tuple[str, _Section]]:
        """`syncs:` / `audiences:`: each entry's name and section."""
        group = self.section(key, optional=True)
        return [(str(name), group.section(str(name))) for name in group.data]

    def read(self, key: Key) -> Any:
        """The key's value, expanded, checked and converted as its definition says (its default when unset)."""
        reader = getattr(self, f"_read_{key.kind}")
        value = reader(key)
        if key.required and value in (None, "", {}, ()):
            owner = self.prefix.rstrip(".").rpartition(".")[2]  # the sync's or audience's name in a hint
            raise ConfigError(self.where(key.name), "missing", key.hint.replace("NAME", owner))
        return value

    def _read_str(self, key: Key) -> str | None:
        value = self.optional_str(key.name)
        return key.default if value is None else value

    def _read_secret(self, key: Key) -> str | None:
        value = self._read_str(key)
        redaction.register(value)
        if key.name in _TOKEN_KEYS:
            _check_token(self, key.name, value)
        return value

    def _read_url(self, key: Key) -> str | None:
        url = self.optional_str(key.name)
        if url:
            self.check_url_port(key.name, url)
        return url

    def _read_id(self, key: Key) -> str | None:
        value = self.data.get(key.name)
        if isinstance(value, (bool, float)):
            raise ConfigError(self.where(key.name), f"{_shown(value)} is not an id",
                              f'quote it: {key.name}: "1234567890123456789"')
        return self.optional_str(key.name)

    def _read_int(self, key: Key) -> int | None:
        if key.default is None and key.name not in self.data:
            return None
        assert key.minimum is not None and key.maximum is not None
        return self.integer(key.name, key.default, int(key.minimum), int(key.maximum))

    def _read_float(self, key: Key) -> float:
        assert key.minimum is not None and key.maximum is not None
        return self.number(key.name, key.default, key.minimum, key.maximum)

    def _read_bool(self, key: Key) -> bool:
        return self.flag(key.name, key.default)

    def _read_duration(self, key: Key) -> int:
        assert key.maximum is not None
        return self.duration(key.name, key.default, maximum_days=int(key.maximum) // 86400)

    def _read_enum(self, key: Key) -> str:
        value = self.optional_str(key.name) or key.default
        if value not in key.choices:
            raise ConfigError(self.where(key.name), f"{_shown(value)} is not one of {', '.join(key.choices)}",
                              _did_you_mean(str(value), key.choices))
        return value

    def _read_region(self, key: Key) -> str | None:
        return self.phone_region(key.name)

    def _read_schema(self, key: Key) -> str | None:
        return self.optional_str(key.name)  # checked by schema_name once the warehouse is known

    def _read_vars(self, key: Key) -> dict[str, Any]:
        value = self.data.get(key.name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(self.where(key.name), "must be a mapping of names to values",
                              "e.g. vars: {country: US}")
        return self.expand_tree(value, key.name)

    def _read_tags(self, key: Key) -> tuple[str, ...]:
        value = self.data.get(key.name)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, (str, int)) and str(item).strip()
                                                  for item in items):
            raise ConfigError(self.where(key.name), "must be a list of names", "e.g. tags: [daily, crm]")
        return tuple(dict.fromkeys(self.expand(str(item), key.name).strip() for item in items))

    def _read_identifiers(self, key: Key) -> dict[str, str]:
        value = self.data.get(key.name)
        if value is None:
            return {}
        if not isinstance(value, dict) or not value:
            raise ConfigError(self.where(key.name), "must map identifier types to columns", key.hint)
        section = _Section(self.file, f"{self.prefix}{key.name}.", value, self.env)
        section.check_keys(set(keys.IDENTIFIER_KINDS))
        columns = {kind: section.optional_str(kind) for kind in keys.IDENTIFIER_KINDS if kind in value}
        for kind, column in columns.items():
            if not column:
                raise ConfigError(section.where(kind), "must name a column", key.hint)
        return {kind: column for kind, column in columns.items() if column}

    def expand_tree(self, value: Any, path: str) -> Any:
        """`${VAR}`s expanded in every string of a nested value; a string that is one whole reference becomes
        the value it spells (`${MIN_TOTAL:-0}` → 0), as if written in the YAML."""
        if isinstance(value, dict):
            return {name: self.expand_tree(item, f"{path}.{name}") for name, item in value.items()}
        if isinstance(value, list):
            return [self.expand_tree(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            expanded = self.expand(value, path)
            return _typed(expanded) if _WHOLE_ENV_REF.match(value) else expanded
        return value

    def env_var_of(self, key: str) -> str | None:
        match = _ENV_REF.search(str(self.data.get(key) or ""))
        return match.group(1) if match else None

    def expand(self, text: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value is None:
                if default is None:
                    if key in _TOKEN_KEYS:
                        return ""  # checked by Project.require_*token, only when something is sent
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

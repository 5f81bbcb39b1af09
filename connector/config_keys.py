"""Every key connector.yml accepts: its type, default, range and meaning, in one place.

The loader (config.py) validates with these definitions, the JSON Schema for editors (config_schema.py) is
generated from them, and the docs' reference tables are tested against them: one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ratelimit import DEFAULT_REQUESTS_PER_SECOND
from .tiktok_spec import EVENT_SOURCES, MAX_EVENTS_PER_REQUEST

MAX_LOOKBACK_DAYS = 366
MAX_AUDIENCE_BATCH = 10_000  # people per mapping request (the contract's limit)
IDENTIFIER_KINDS = ("email", "phone", "idfa", "gaid")  # audience identifiers, in id_schema order


@dataclass(frozen=True)
class Key:
    """One key of a section.

    kind: str | secret | url | id | int | float | bool | duration | enum | region | schema | vars | tags |
    identifiers | section (a nested section, read by the loader itself)."""

    name: str
    kind: str
    help: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    hint: str = ""  # what to write when the key is missing or wrong
    field: str | None = None  # the settings attribute, when it differs from the key's name

    @property
    def attribute(self) -> str:
        return self.field or self.name


def _keys(*keys: Key) -> dict[str, Key]:
    return {key.name: key for key in keys}


WAREHOUSE = _keys(
    Key("url", "url", "`duckdb:///file.duckdb`, `snowflake://USER:${SNOWFLAKE_PASSWORD}@ACCOUNT/DB/SCHEMA?"
        "warehouse=WH&role=ROLE`, or any SQLAlchemy URL (`postgresql://user@host:5432/db`)", required=True,
        hint="e.g. url: duckdb:///warehouse.duckdb"),
    Key("private_key_path", "str", "Snowflake key-pair (JWT) authentication: the private key file"),
    Key("private_key_passphrase", "secret", "Snowflake: the private key's passphrase"),
    Key("authenticator", "str", "Snowflake: another authenticator (e.g. externalbrowser)"),
    Key("memory_limit", "str", "DuckDB only: the memory DuckDB may use inside the connector's process (it spills "
        "to disk beyond), e.g. 256MB; unset, 64MB, and 256MB for a sync of one row per item (it sorts its whole "
        "result) or of items in a LIST column (wide rows)", "64MB"),
    Key("threads", "int", "DuckDB only: threads for the read query", 1, minimum=1, maximum=256),
)
DUCKDB_ONLY = ("memory_limit", "threads")  # DuckDB is the one warehouse that runs in this process

STATE = _keys(
    Key("url", "url", "where the state tables live, e.g. `duckdb:///state.duckdb` when the warehouse is read-only "
        "(default: the warehouse)"),
    Key("schema", "schema", "schema for the state tables (created if missing)"),
)

TIKTOK = _keys(
    Key("access_token", "secret", "the Events API token; never printed", hint="${TIKTOK_ACCESS_TOKEN}"),
    Key("audience_access_token", "secret", "the Marketing API token (Audience Management scope) for audiences; "
        "never printed", hint="${TIKTOK_AUDIENCE_ACCESS_TOKEN}"),
    Key("base_url", "str", "`https://business-api.tiktok.com/open_api`; `fake` sends to a built-in fake on "
        "127.0.0.1; the environment variable TIKTOK_API_BASE_URL overrides both"),
    Key("test_event_code", "str", "when set, every send is a test (state untouched)"),
    Key("partner_name", "str", "top-level `partner_name` in each request"),
    Key("timeout_seconds", "float", "deadline of one HTTP attempt (connect and the whole answer)", 30.0,
        minimum=0.1, maximum=3600),
    Key("max_attempts", "int", "attempts per request before the run fails", 8, minimum=1, maximum=100),
    Key("max_retry_seconds", "float", "deadline of all attempts of one request", 300.0, minimum=0, maximum=86400),
    Key("max_in_flight", "int", "requests sent concurrently per sync (one connection each)", 16, minimum=1,
        maximum=64),
    Key("max_requests_per_second", "float", "requests per second for this access token, shared by every sync "
        "of the process that uses it; halved while TikTok throttles (code 40100), then back up (see Performance)",
        DEFAULT_REQUESTS_PER_SECOND, minimum=0.1, maximum=100_000),
    Key("audience_max_requests_per_second", "float", "audience (Marketing API) requests per second, shared by "
        "every audience on one token; halved while TikTok throttles", 10.0, minimum=0.1, maximum=1000),
)

_SHARED_JOB = (
    Key("query", "str", "a Jinja SQL template in queries/ (`queries/<dialect>/NAME` wins when it exists)",
        required=True, hint="e.g. query: NAME.sql (a file in queries/)"),
    Key("default_phone_region", "region", "region for national phone numbers, e.g. `US`"),
    Key("hash_in_warehouse", "bool", "normalize and hash match keys in SQL: plain values never leave the warehouse",
        False),
    Key("max_reject_rate", "float", "above this share of invalid rows the run exits 3 and alerts", 0.1, minimum=0,
        maximum=1),
    Key("alert_webhook_url", "secret", "a webhook (Slack-compatible) called when the health changes"),
    Key("vars", "vars", "values for the query template: `{{ vars.name }}` (merged over the project's `vars`)", {}),
    Key("tags", "tags", "labels for `--select tag:NAME`", ()),
)

SYNC = _keys(
    *_SHARED_JOB,
    Key("mapping", "str", "a file in mappings/, else a built-in one (default: the built-in amperity.yml)"),
    Key("event_source", "enum", "the kind of TikTok event source", "offline", choices=tuple(sorted(EVENT_SOURCES))),
    Key("event_source_id", "id", "the event set id (a string); or map a column to event_source_id"),
    Key("cursor", "str", "the column that grows when a row changes (timestamp, date or number)", required=True,
        hint="name the column that grows when a row changes, e.g. cursor: updated_at"),
    Key("attribution_window_days", "int", "older events are not sent (`event_too_old`)", 28, minimum=1, maximum=28),
    Key("future_tolerance_seconds", "int", "events further in the future are not sent (`event_in_future`)", 300,
        minimum=0, maximum=86400),
    Key("lookback", "duration", "re-read this far behind the watermark for late rows (`2h`, `30m`, `1d`); the "
        "ledger skips what was sent", 0, maximum=MAX_LOOKBACK_DAYS * 86400, field="lookback_seconds"),
    Key("safety_margin_seconds", "int", "rows whose cursor is newer than run start minus this wait for the next run",
        30, minimum=0, maximum=7 * 86400),
    Key("batch_size", "int", "events per request (TikTok's limit is 1000)", MAX_EVENTS_PER_REQUEST, minimum=1,
        maximum=MAX_EVENTS_PER_REQUEST),
)

AUDIENCE = _keys(
    *_SHARED_JOB,
    Key("advertiser_id", "id", "the TikTok advertiser (ad account) that owns the audience", required=True,
        hint='e.g. advertiser_id: "7000000000000000001"'),
    Key("audience_name", "str", "the Custom Audience's name, created on the first run when `audience_id` is not "
        "set (at most 128 characters)"),
    Key("audience_id", "id", "adopt an existing API-created audience instead of creating one"),
    Key("member_id", "str", "the column that identifies a person across runs", required=True,
        hint="name the column that identifies a person, e.g. member_id: customer_id"),
    Key("identifiers", "identifiers", "identifier type → column: any of email, phone, idfa, gaid (at least one)",
        required=True, hint="e.g. identifiers: {email: email, phone: phone}"),
    Key("mode", "enum", "`mirror` adds and removes people; `add_only` never removes", "mirror",
        choices=("add_only", "mirror")),
    Key("phone_format", "enum", "how phones are hashed: `digits` (country code and number, no `+`: TikTok's "
        "customer-file form) or `e164_plus` (the Events API form)", "digits", choices=("digits", "e164_plus")),
    Key("device_id_hash", "enum", "how IDFA/GAID are hashed: `sha256` or `md5` (for sources that only have MD5)",
        "sha256", choices=("md5", "sha256")),
    Key("max_delete_fraction", "float", "refuse to remove more than this share of the audience in one run "
        "(`--allow-mass-delete` overrides once)", 0.5, minimum=0, maximum=1),
    Key("batch_size", "int", "people per mapping request", 5000, minimum=1, maximum=MAX_AUDIENCE_BATCH),
)

# Job keys a project may set once at the top level as the default for every sync (and, where the key
# exists there, every audience). `vars` at the top level are the project's own (see TOP).
DEFAULTABLE = tuple(name for name in SYNC if name not in ("query", "mapping", "cursor", "vars", "tags"))
# batch_size is not among them: events go 1,000 a request, people 10,000.
AUDIENCE_DEFAULTABLE = tuple(name for name in DEFAULTABLE if name in AUDIENCE and name != "batch_size")

TOP = _keys(
    Key("warehouse", "section", "the warehouse the queries run on", required=True),
    Key("state", "section", "where the state tables live"),
    Key("tiktok", "section", "TikTok API settings"),
    Key("syncs", "section", "event syncs by name"),
    Key("audiences", "section", "Custom Audiences by name"),
    Key("vars", "vars", "values every query template sees as `{{ vars.name }}`", {}),
    Key("targets", "section", "named environments (dev, prod…): each may override warehouse, state, tiktok and vars"),
    Key("target", "str", "the target used when `--target` is not given"),
    Key("threads", "int", "jobs `sync` runs at once in its process (`--threads` wins); jobs running together "
        "share the rate limit of their access token", 1, minimum=1, maximum=64),
)

TARGET = _keys(
    Key("warehouse", "section", "overrides the warehouse keys"),
    Key("state", "section", "overrides the state keys"),
    Key("tiktok", "section", "overrides the tiktok keys"),
    Key("vars", "vars", "merged over the project's vars", {}),
)

"""Audience projects for the CLI tests: connector.yml with one audience, a `people` table on any warehouse, and
the fake TikTok's view of the audience."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.audience_ids import IdentifierHasher
from connector.audience_spec import MAPPING_PATH
from connector.config import BASE_URL_ENV
from connector.testing.fake_tiktok import FakeTikTok

from audience_helpers import IDENTIFIERS, expected_hashes, people_table
from warehouse_helpers import Target, duckdb_target

ADVERTISER = "7000000000000000001"
AUDIENCE_TOKEN = "aud-token-7f3c9e1b2d"
NAME = "vip"
HASHER = IdentifierHasher("US")


def person(n: int) -> tuple[Any, ...]:
    """A messy but valid person: mixed-case emails with tags, national and international phones, non-ASCII."""
    email = f" Kund{n}+vip@Exämple-{n % 7}.com " if n % 11 else None
    phone = (f"+1 (415) 55{n % 10}-{n % 10000:04d}" if n % 3 else f"415{n % 10}55{n % 10000:04d}") if n % 5 else None
    idfa = f"6d92078a-8246-4ba4-ae5b-{n:012x}" if n % 4 == 0 else None
    if email is None and phone is None and idfa is None:
        email = f"fallback{n}@example.com"
    return (f"m{n:07d}", email, phone, idfa, None)


def people(start: int, stop: int) -> list[tuple[Any, ...]]:
    return [person(n) for n in range(start, stop)]


@dataclass
class AudienceProject:
    root: Path
    target: Target

    def configure(self, state: dict[str, Any] | None = None, tiktok: dict[str, Any] | None = None,
                  **audience: Any) -> None:
        section: dict[str, Any] = {"query": "people.sql", "advertiser_id": ADVERTISER, "audience_name": "VIP buyers",
                                   "member_id": "customer_id", "identifiers": dict(IDENTIFIERS),
                                   "default_phone_region": "US", "batch_size": 3}
        section.update(audience)
        tiktok_section = {"audience_access_token": "${TIKTOK_AUDIENCE_ACCESS_TOKEN}", "max_attempts": 6,
                          "max_retry_seconds": 20, "timeout_seconds": 2, "audience_max_requests_per_second": 500}
        tiktok_section.update(tiktok or {})
        doc: dict[str, Any] = {"warehouse": {"url": self.target.url}, "tiktok": tiktok_section,
                               "audiences": {NAME: {k: v for k, v in section.items() if v is not None}}}
        if state or self.target.state:
            doc["state"] = {**(self.target.state or {}), **(state or {})}
        (self.root / "queries").mkdir(parents=True, exist_ok=True)
        (self.root / "queries" / "people.sql").write_text("select * from people\n", encoding="utf-8")
        (self.root / "connector.yml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def load(self, rows: Sequence[tuple[Any, ...]]) -> None:
        with self.target.session() as con:
            people_table(con, self.target.dialect, rows)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.target.query(sql)


@contextmanager
def duckdb_project(root: Path) -> Iterator[AudienceProject]:
    project = AudienceProject(root, duckdb_target(root))
    project.configure()
    yield project


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTikTok]:
    with FakeTikTok(audience_access_token=AUDIENCE_TOKEN, advertiser_ids=[ADVERTISER]) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.base_url)
        monkeypatch.setenv("TIKTOK_AUDIENCE_ACCESS_TOKEN", AUDIENCE_TOKEN)
        yield server


def membership(fake: FakeTikTok) -> dict[str, set[str]]:
    """The one audience's hashes in the fake (there must be exactly one)."""
    audiences = fake.audiences.audiences()
    assert len(audiences) == 1, [a.name for a in audiences]
    return fake.audiences.members(audiences[0].audience_id)


def expected(rows: Sequence[tuple[Any, ...]]) -> dict[str, set[str]]:
    return expected_hashes(rows, HASHER)


def mapping_bodies(fake: FakeTikTok) -> list[dict[str, Any]]:
    return [r.body for r in fake.audiences.requests(MAPPING_PATH) if r.code == 0 and r.body is not None]


def reports(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

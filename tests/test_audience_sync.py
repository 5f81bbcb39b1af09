"""Audiences through the real CLI (`tiktok-connector sync`, in process) against the fake TikTok over HTTP:
creation and adoption, convergence of adds, removes and identifier changes, nothing sent when nothing
changed, the mass-delete guard, add_only, dry runs, faults, rejects without PII, the token never shown,
and the same requests from DuckDB, PostgreSQL and Snowflake (fakesnow), hashed in Python or in the warehouse."""

from __future__ import annotations

import json
import string
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import connector
from connector import redaction
from connector.audience_client import AudienceClient
from connector.audience_plan import MappingRequest
from connector.audience_spec import CREATE_PATH, MAPPING_PATH
from connector.report import AudienceReport
from connector.runner import RunOptions
from connector.tiktok import RetryPolicy

from audience_cli_helpers import (
    ADVERTISER, AUDIENCE_TOKEN, NAME, AudienceProject, duckdb_project, expected, fake, mapping_bodies, membership,
    people, reports,
)
from audience_helpers import FIRST, SECOND, SECOND_EXPECTED
from cli_helpers import assert_no_plain_pii, cli
from warehouse_helpers import DIALECTS, target_for

__all__ = ["fake"]  # the fixture
COUNTS = ("rows_read", "members_added", "members_removed", "members_changed", "members_unchanged", "members_kept",
          "members_before", "members_after", "rejected_by_reason", "requests", "hashes_deleted")


def sync(capsys, project: AudienceProject, *args: str) -> tuple[int, dict, str]:
    code, out, err = cli(capsys, "sync", *args, "--project", str(project.root), "--json")
    found = reports(out)
    assert len(found) == 1, (out, err)
    return code, found[0], out + err


@pytest.fixture
def project(tmp_path: Path):
    with duckdb_project(tmp_path / "project") as p:
        yield p


def test_first_run_creates_the_audience_and_a_second_run_sends_nothing(capsys, fake, project) -> None:
    project.load(FIRST)
    code, report, text = sync(capsys, project)
    assert code == 0, text
    assert set(report) >= {"audience", "status", "rows_read", "members_added", "members_removed",
                           "members_unchanged", "rejected_by_reason", "audience_id"}
    assert (report["audience"], report["status"], report["rows_read"], report["members_added"]) == (NAME, "success", 7, 7)
    (created,) = fake.audiences.audiences(ADVERTISER)
    assert created.name == "VIP buyers" and report["audience_id"] == created.audience_id
    assert membership(fake) == expected(FIRST)
    assert all(len(b["batch_data"]) <= 3 for b in mapping_bodies(fake))  # batch_size 3
    assert_no_plain_pii(text)

    requests = len(fake.audiences.requests())
    code, report, _ = sync(capsys, project)
    assert code == 0 and report["members_unchanged"] == 7 and report["members_added"] == 0
    assert len(fake.audiences.requests()) == requests, "a run with nothing changed sent requests"


def test_adds_removes_and_identifier_changes_converge(capsys, fake, project) -> None:
    project.load(FIRST)
    assert sync(capsys, project)[0] == 0
    project.load(SECOND)
    code, report, text = sync(capsys, project)
    assert code == 3 and report["limit_crossed"], text  # 3 of 9 rows not usable: above max_reject_rate 0.1
    assert membership(fake) == expected(SECOND_EXPECTED)
    assert report["rejected_by_reason"] == {"duplicate_member_id": 2, "no_match_keys": 1}
    # c8 is new; c5 left and c6 has no usable identifier; c2 and c3 changed identifiers
    assert (report["members_added"], report["members_removed"], report["members_changed"]) == (1, 2, 2)
    rejects = project.query("select sync_name, event_id, reason, detail from tiktok_rejects")
    assert sorted(r[2] for r in rejects) == ["duplicate_member_id", "duplicate_member_id", "no_match_keys"]
    assert_no_plain_pii(json.dumps([list(map(str, r)) for r in rejects]) + text)
    members = project.query("select * from tiktok_audience_members")
    assert_no_plain_pii(json.dumps([list(map(str, r)) for r in members]))
    # and back: everyone of the first result again
    project.load(FIRST)
    assert sync(capsys, project)[0] == 0
    assert membership(fake) == expected(FIRST)
    assert project.query("select count(*) from tiktok_audience_deletes") == [(0,)]


def test_an_unchanged_result_is_seen_without_a_diff_and_every_change_still_is(capsys, fake, project) -> None:
    project.configure(mode="add_only", max_reject_rate=1)
    project.load(FIRST)
    assert sync(capsys, project)[0] == 0
    code, report, text = sync(capsys, project)
    assert code == 0 and "nothing to send" in text and report["members_unchanged"] == 7 and report["rows_read"] == 7
    # each of these changes what TikTok must hold, or what a run must do: none may be taken for "unchanged"
    rows = list(FIRST)
    for change in ("a pair of duplicates", "a person gone (kept: add_only)", "mirror", "a changed email"):
        if change == "a pair of duplicates":
            rows = rows + [("c9", "x@example.com", None, None, None)] * 2
        elif change == "a changed email":
            rows = [(r[0], "new@example.com", *r[2:]) if r[0] == "c1" else r for r in rows]
        elif change == "mirror":  # the same result, but c5 is to leave now
            project.configure(mode="mirror", max_reject_rate=1)
        else:
            rows = [r for r in rows if r[0] != "c5"]
        project.load(rows)
        code, report, text = sync(capsys, project)
        assert code == 0 and "nothing to send" not in text, change
        code, report, text = sync(capsys, project)
        assert "nothing to send" in text, change
    assert membership(fake) == expected([r for r in rows if r[0] != "c9"])


def test_a_large_result_is_read_in_ranges_of_member_keys_with_the_same_requests(capsys, fake, project, monkeypatch) -> None:
    import connector.audience_run as audience_run
    rows = people(0, 60) + [(None, "nobody@example.com", None, None, None)]
    project.configure(batch_size=7, max_reject_rate=1)
    project.load(rows)
    assert sync(capsys, project)[0] == 0
    one_query = mapping_bodies(fake)
    fake.audiences.reset()
    project.query("delete from tiktok_audiences")  # start over: the same requests are to come
    project.query("delete from tiktok_audience_members")
    monkeypatch.setattr(audience_run, "PEOPLE_PER_PAGE", 8)
    code, report, text = sync(capsys, project)
    assert code == 0 and report["rejected_by_reason"] == {"missing_member_id": 1}, text
    assert mapping_bodies(fake) == one_query
    project.load(rows[5:])
    assert sync(capsys, project)[0] == 0
    assert membership(fake) == expected(rows[5:-1])


def test_state_in_another_database_converges_too(capsys, fake, project) -> None:
    project.configure(state={"url": "duckdb:///state.duckdb", "schema": "tt"}, max_reject_rate=0.5)
    for rows in (FIRST, SECOND, FIRST):
        project.load(rows)
        code, report, text = sync(capsys, project)
        assert code == 0, text
        assert membership(fake) == expected(SECOND_EXPECTED if rows is SECOND else rows)
    assert not project.query("select table_name from information_schema.tables where table_name like 'tiktok_%'")
    requests = len(fake.audiences.requests())
    assert sync(capsys, project)[0] == 0 and len(fake.audiences.requests()) == requests


def test_adopts_the_audience_created_by_a_run_that_died_before_storing_it(capsys, fake, project) -> None:
    audience_id = fake.audiences.add_audience(ADVERTISER, "VIP buyers")  # created, never stored
    fake.audiences.add_audience(ADVERTISER, "VIP buyers (old)")
    project.load(FIRST)
    code, report, text = sync(capsys, project)
    assert code == 0, text
    assert report["audience_id"] == audience_id and fake.audiences.stats["created"] == 0
    assert fake.audiences.members(audience_id) == expected(FIRST)


def test_two_audiences_of_the_name_are_refused_with_a_hint(capsys, fake, project) -> None:
    fake.audiences.add_audience(ADVERTISER, "VIP buyers")
    fake.audiences.add_audience(ADVERTISER, "VIP buyers")
    project.load(FIRST)
    code, report, text = sync(capsys, project)
    assert code == 2 and report["status"] == "error" and "set audience_id" in report["error"]
    assert not fake.audiences.requests(MAPPING_PATH) and not fake.audiences.requests(CREATE_PATH)


def test_a_configured_audience_id_is_adopted_and_checked(capsys, fake, project) -> None:
    audience_id = fake.audiences.add_audience(ADVERTISER, "made elsewhere")
    project.configure(audience_id=audience_id, audience_name=None)
    project.load(FIRST)
    code, report, text = sync(capsys, project)
    assert code == 0 and report["audience_id"] == audience_id, text
    assert fake.audiences.members(audience_id) == expected(FIRST)
    lookalike = fake.audiences.add_audience(ADVERTISER, "lookalike", type="Lookalike")
    with duckdb_project(project.root.parent / "other") as other:
        other.configure(audience_id=lookalike, audience_name=None)
        other.load(FIRST)
        code, report, _ = sync(capsys, other)
        assert code == 2 and "created through the API" in report["error"]


def test_mass_delete_guard_stops_before_sending_and_alerts(capsys, fake, project, tmp_path) -> None:
    hook = _Webhook()
    try:
        project.configure(alert_webhook_url=hook.url)
        project.load(people(0, 20))
        assert sync(capsys, project)[0] == 0
        before = len(fake.audiences.requests())
        project.load(people(0, 5))  # a broken query: 15 of 20 would leave
        code, report, text = sync(capsys, project)
        assert code == 1 and report["status"] == "failed"
        assert "max_delete_fraction" in report["error"] and "--allow-mass-delete" in report["error"]
        assert len(fake.audiences.requests()) == before, "the guard let a request through"
        assert membership(fake) == expected(people(0, 20))
        assert hook.bodies and "failed" in hook.bodies[-1]["text"] and "audience 'vip'" in hook.bodies[-1]["text"]
        code, report, _ = sync(capsys, project, "--dry-run", "--allow-mass-delete")
        assert code == 0 and len(fake.audiences.requests()) == before
        code, report, text = sync(capsys, project, "--allow-mass-delete")
        assert code == 0 and report["members_removed"] == 15, text
        assert membership(fake) == expected(people(0, 5))
    finally:
        hook.close()


def test_add_only_never_removes(capsys, fake, project) -> None:
    project.configure(mode="add_only")
    project.load(FIRST)
    assert sync(capsys, project)[0] == 0
    project.load(SECOND)
    code, report, text = sync(capsys, project)
    assert code == 3 and report["members_removed"] == 0, text
    want = expected(FIRST)
    for id_type, hashes in expected(SECOND_EXPECTED).items():
        want.setdefault(id_type, set()).update(hashes)
    assert membership(fake) == want
    assert not [b for b in mapping_bodies(fake) if b["action"] == "delete"]


def test_dry_run_sends_nothing_and_writes_nothing(capsys, fake, project) -> None:
    project.load(FIRST)
    code, report, text = sync(capsys, project, "--dry-run")
    assert code == 0 and report["dry_run"] and report["members_added"] == 7 and report["people_to_send"] == 7, text
    assert not fake.audiences.requests()
    assert not project.query("select table_name from information_schema.tables where table_name like 'tiktok_%'")


def test_faults_and_throttling_are_retried(capsys, fake, project) -> None:
    project.load(people(0, 30))
    fake.audiences.fail_next(2)
    fake.audiences.throttle_next(2)
    fake.audiences.drop_next(1)
    code, report, text = sync(capsys, project)
    assert code == 0 and report["retries"] == 5, text
    assert membership(fake) == expected(people(0, 30))


def test_a_refused_token_stops_the_run_and_is_never_shown(capsys, fake, project) -> None:
    project.load(FIRST)
    fake.audiences.set_auth_error(40105)
    code, report, text = sync(capsys, project)
    assert code == 1 and "audience_access_token" in report["error"]
    assert AUDIENCE_TOKEN not in text
    assert len(fake.audiences.requests()) == 1  # the name lookup; a refused token is not retried


def test_sync_runs_syncs_and_audiences_and_the_python_api_too(capsys, fake, project) -> None:
    project.load(FIRST)
    (report,) = connector.sync(str(project.root), options=RunOptions(dry_run=True))
    assert isinstance(report, AudienceReport) and report.ok and report.members_added == 7
    (report,) = connector.sync(str(project.root), [NAME])
    assert report.exit_code == 0 and report.to_dict()["audience"] == NAME
    code, out, _ = cli(capsys, "sync", "--select", "audience:*", "--project", str(project.root))
    assert code == 0 and "vip: SUCCESS (audience)" in out


def test_bisection_finds_the_refused_person_and_sends_the_rest(fake) -> None:
    audience_id = fake.audiences.add_audience(ADVERTISER, "x")
    client = AudienceClient(fake.base_url, AUDIENCE_TOKEN, retry=RetryPolicy(base_delay=0.01), rate=1000)
    good = [(f"{n:064x}", None, None, None, None, None) for n in range(1, 10)]
    rows = good[:6] + [("Z" * 64, None, None, None, None, None)] + good[6:]
    refused = client.mapping_bisected(MappingRequest("add", ("EMAIL_SHA256",), tuple(rows)), ADVERTISER, audience_id)
    assert [r.index for r in refused] == [6] and "SHA-256" in refused[0].message
    assert fake.audiences.members(audience_id) == {"EMAIL_SHA256": {r[0] for r in good}}
    assert client.get(ADVERTISER, [audience_id])[0].cover_num == 9
    assert client.verify(ADVERTISER).verified is True
    assert AudienceClient(fake.base_url, "wrong-token-123456", rate=1000).verify(ADVERTISER).verified is False


_TOKENS = st.text(alphabet=string.ascii_letters + string.digits + "-_.~+/=", min_size=12, max_size=40)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(token=_TOKENS)
def test_the_audience_token_is_in_no_output(capsys, fake, project, monkeypatch, token: str) -> None:
    saved = redaction._secrets, redaction._pattern  # generated tokens must not mask later tests' text
    try:
        _token_is_in_no_output(capsys, fake, project, monkeypatch, token)
    finally:
        redaction._secrets, redaction._pattern = saved


def _token_is_in_no_output(capsys, fake, project, monkeypatch, token: str) -> None:
    fake.audiences.reset()
    fake.audiences.access_token = token
    monkeypatch.setenv("TIKTOK_AUDIENCE_ACCESS_TOKEN", token)
    project.configure(audience_name=f"tok {token[:8]}")
    project.load(FIRST[:2])
    code, report, text = sync(capsys, project)
    assert code == 0, text
    fake.audiences.access_token = token + "x"  # now refused: TikTok's answer and the error
    project.load(FIRST[:3])
    code, report, text2 = sync(capsys, project)
    assert code == 1
    for shown in (text, text2, json.dumps(project.query("select * from tiktok_runs"), default=str)):
        assert token not in shown


def test_every_warehouse_sends_the_same_requests_hashed_in_python_or_in_sql(capsys, fake, tmp_path) -> None:
    bodies = {}
    for dialect in DIALECTS:
        for hash_in_warehouse in (False, True):
            fake.audiences.reset()
            root = tmp_path / f"{dialect}-{hash_in_warehouse}"
            try:
                context = target_for(dialect, root)
                target = context.__enter__()
            except pytest.skip.Exception:
                if dialect == "postgresql":
                    continue
                raise
            try:
                p = AudienceProject(root if dialect != "duckdb" else root / "project", target)
                p.configure(hash_in_warehouse=hash_in_warehouse, max_reject_rate=0.5)
                counted = []
                for rows in (FIRST, SECOND, people(0, 12), people(0, 12)):
                    p.load(rows)
                    code, report, text = sync(capsys, p, "--allow-mass-delete")
                    assert code == 0, (dialect, text)
                    counted.append({k: report[k] for k in COUNTS})
                assert membership(fake) == expected(people(0, 12)), dialect
                bodies[dialect, hash_in_warehouse] = (mapping_bodies(fake), counted)
            finally:
                context.__exit__(None, None, None)
    assert {d for d, _ in bodies} >= {"duckdb", "snowflake"}
    first = bodies["duckdb", False]
    assert len(first[0]) > 5 and all(b == first for b in bodies.values()), {k: b[1] for k, b in bodies.items()}
    assert first[1][0]["members_added"] == 7 and first[1][-1]["members_unchanged"] == 12


class _Webhook:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_sync_runs_the_event_sync_then_the_audience(capsys, fake_tiktok, make_project, order, now, monkeypatch) -> None:
    import yaml

    from audience_helpers import PEOPLE_DDL
    monkeypatch.setenv("TIKTOK_AUDIENCE_ACCESS_TOKEN", "audience-token")
    p = make_project([order(1, now), order(2, now)],
                     ddl=[PEOPLE_DDL.format(member_type="varchar")])
    doc = yaml.safe_load((p.root / "connector.yml").read_text())
    with duckdb_project(p.root) as audience_project:  # writes a connector.yml with the audience alone
        doc["audiences"] = yaml.safe_load((p.root / "connector.yml").read_text())["audiences"]
        doc["tiktok"]["audience_access_token"] = "${TIKTOK_AUDIENCE_ACCESS_TOKEN}"
        (p.root / "connector.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        audience_project.load(FIRST)
    code, out, err = cli(capsys, "sync", "--project", str(p.root), "--json")
    first, second = reports(out)
    assert code == 0, out + err
    assert first["sync"] == "orders" and first["events_sent"] == 2
    assert second["audience"] == NAME and second["members_added"] == 7
    assert fake_tiktok.audiences.members(second["audience_id"]) == expected(FIRST)
    code, out, _ = cli(capsys, "sync", NAME, "--project", str(p.root), "--json")
    assert code == 0 and [r.get("audience") for r in reports(out)] == [NAME]


def test_requests_are_paced_by_the_shared_limiter_and_slow_down_when_throttled(fake) -> None:
    from connector.ratelimit import shared_limiter
    audience_id = fake.audiences.add_audience(ADVERTISER, "paced")
    retry = RetryPolicy(base_delay=0.01, max_delay=0.02)
    client = AudienceClient(fake.base_url, AUDIENCE_TOKEN, retry=retry, rate=20)
    assert client.limiter is shared_limiter(fake.base_url, AUDIENCE_TOKEN, 20)  # one per token, process-wide
    other = AudienceClient(fake.base_url, AUDIENCE_TOKEN, retry=retry, rate=40)
    assert other.limiter is client.limiter and client.limiter.ceiling == 20  # the lower rate holds for both
    started = time.monotonic()
    for _ in range(11):
        client.get(ADVERTISER, [audience_id])
    assert time.monotonic() - started >= 0.45  # 11 requests at 20/s: 10 gaps of 50 ms
    fake.audiences.throttle_next(2)
    client.get(ADVERTISER, [audience_id])
    assert client.limiter.throttled_count == 2 and client.retries == 2 and client.limiter.rate < 20


def test_a_missing_audience_token_is_a_configuration_error_before_anything_is_read(capsys, fake, project,
                                                                                     monkeypatch) -> None:
    monkeypatch.delenv("TIKTOK_AUDIENCE_ACCESS_TOKEN")
    project.load(FIRST)
    code, report, text = sync(capsys, project)
    assert code == 2 and report["status"] == "error" and "TIKTOK_AUDIENCE_ACCESS_TOKEN" in report["error"], text
    assert not fake.audiences.requests()
    code, report, _ = sync(capsys, project, "--dry-run")  # a dry run sends nothing: it needs no token
    assert code == 0 and report["members_added"] == 7


def test_a_query_error_names_the_line_of_the_audience_query(capsys, fake, project) -> None:
    project.load(FIRST)
    (project.root / "queries" / "people.sql").write_text("select *\nfrom people\nwhere no_such_column = 1\n")
    code, report, text = sync(capsys, project)
    assert code == 1 and report["status"] == "failed", text
    assert "no_such_column" in report["error"] and "people.sql" in report["error"] and "line 3" in report["error"], \
        report["error"]
    assert not fake.audiences.requests()


def test_a_run_holding_the_audience_makes_another_skip(capsys, fake, project) -> None:
    import datetime as dt

    from connector.state import StateStore, lease_owner
    from connector.warehouse import open_warehouse
    project.load(FIRST)
    assert sync(capsys, project)[0] == 0
    warehouse = open_warehouse(f"duckdb:///{project.root / 'warehouse.duckdb'}")
    try:
        store = StateStore(warehouse.connect())
        assert store.acquire_lease(NAME, lease_owner("other-run"), dt.datetime.now(dt.timezone.utc), 600) is None
        store.conn.close()
    finally:
        warehouse.close()
    project.load(SECOND)
    requests = len(fake.audiences.requests())
    code, report, text = sync(capsys, project)
    assert code == 0 and report["status"] == "skipped" and "already running" in text
    assert len(fake.audiences.requests()) == requests

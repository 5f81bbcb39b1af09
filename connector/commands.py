"""The workflow commands besides sync: init, check, preview, status, history, rejects, reset."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import inspection
from .config import Project, load_project
from .demo import build_warehouse, write_project
from .errors import ConfigError, ConnectorError, MissingDatabase
from .output import paint
from .runner import FAKE_BASE_URL, RunOptions, run_sync
from .state import StateStore
from .tiktok import RetryPolicy, TikTokClient, verify_access
from .timeutil import utcnow
from .warehouse import open_warehouse, quietly

OK, FAILED, CONFIG = 0, 1, 2


def init(directory: str) -> int:
    root = Path(directory).resolve()
    if (root / "connector.yml").exists():
        raise ConfigError(str(root / "connector.yml"), "already exists", "init writes a new project: pick another DIR")
    root.mkdir(parents=True, exist_ok=True)
    write_project(root)
    build_warehouse(root / "warehouse.duckdb", 200, utcnow())
    print(f"created a project in {root}:\n"
          "  connector.yml             warehouse, TikTok settings and the 'purchases' sync\n"
          "  queries/purchases.sql     the SQL that selects events (Jinja)\n"
          "  mappings/purchases.yml    columns → TikTok fields\n"
          "  .env.example              copy to .env for your token\n"
          "  warehouse.duckdb          a sample warehouse with 200 orders\n"
          f"next: tiktok-connector check --project {directory}, then preview purchases, then sync")
    return OK


def _store(project: Project) -> tuple[Any, StateStore]:
    warehouse = open_warehouse(project.state_url or project.warehouse_url, project.warehouse_options)
    store = StateStore(warehouse.connect(), project.state_schema)
    store.ensure_tables()
    return warehouse, store


@contextmanager
def _reading(project: Project) -> Iterator[StateStore | None]:
    """The state tables opened for reading (a DuckDB file read-only), or None when there are none yet: no
    state file, or no tables. Creates and writes nothing."""
    try:
        warehouse = open_warehouse(project.state_url or project.warehouse_url, project.warehouse_options,
                                   read_only=True)
    except MissingDatabase:
        yield None
        return
    try:
        store = StateStore(warehouse.connect(), project.state_schema)
        try:
            yield store if store.version() is not None else None
        finally:
            quietly(store.conn.close, "closing the state connection")
    finally:
        warehouse.close()


def check(project_dir: str, names: list[str], as_json: bool, test_event_code: str | None) -> int:
    project = load_project(project_dir)
    results: list[dict[str, Any]] = []
    worst = OK
    for sync in project.select(names):
        result: dict[str, Any] = {"sync": sync.name, "checks": []}
        def add(name: str, ok: bool | None, message: str) -> None:
            result["checks"].append({"check": name, "ok": ok, "message": message})
        try:
            report = run_sync(project, sync, RunOptions(dry_run=True, preview_limit=1))
        except ConfigError as exc:
            add("configuration", False, str(exc))
            worst = CONFIG
            results.append(result)
            continue
        if not report.ok:
            add("query", False, report.error or "the query failed")
            worst = max(worst, FAILED)
            results.append(result)
            continue
        add("configuration", True, "connector.yml, query and mapping are valid")
        add("query", True, f"renders and runs; the mapped columns and cursor {sync.cursor!r} are in its result")
        for note in report.notes:
            add("mapping", None, note)
        verification = _verify(project, sync.event_source, sync.event_source_id, report, test_event_code)
        add("tiktok", verification[0], verification[1])
        if verification[0] is False:
            worst = max(worst, CONFIG if not project.tiktok.access_token else FAILED)
        results.append(result)
    for result in results:
        if as_json:
            print(json.dumps(result), flush=True)
            continue
        print(paint(result["sync"], "bold"))
        for item in result["checks"]:
            mark = {True: paint("ok  ", "green"), False: paint("FAIL", "red"), None: paint("note", "yellow")}
            print(f"  {mark[item['ok']]} {item['check']}: {item['message']}")
    return worst


def _verify(project: Project, event_source: str, event_source_id: str | None, report: Any,
            test_event_code: str | None) -> tuple[bool | None, str]:
    if not project.tiktok.access_token:
        return False, f"no access token: {project.tiktok.token_hint}"
    source_id = event_source_id or (report.sample_requests[0]["event_source_id"] if report.sample_requests else None)
    if not source_id:
        return None, "no event_source_id to verify (set it, or map a column; no row had one)"
    fake = None
    base_url = project.tiktok.base_url
    if base_url == FAKE_BASE_URL:
        from .testing.fake_tiktok import FakeTikTok
        fake = FakeTikTok(access_token=project.tiktok.access_token).start()
        base_url = fake.base_url
    try:
        settings = project.tiktok  # a sync's deadlines: timeout_seconds per attempt, max_retry_seconds for retries
        client = TikTokClient(base_url, settings.access_token, timeout=settings.timeout_seconds,
                              retry=RetryPolicy(max_attempts=settings.max_attempts,
                                                max_elapsed=settings.max_retry_seconds))
        if test_event_code and report.sample_requests:
            events = report.sample_requests[0]["data"][:1]
            try:
                client.track(event_source, source_id, events, test_event_code)
            except ConnectorError as exc:
                return False, f"the test event was refused: {exc}"
            return True, f"one test event accepted with test_event_code {test_event_code}: see Events Manager"
        verification = verify_access(client, event_source, source_id)
        suffix = " (the built-in fake TikTok: tiktok.base_url is 'fake')" if fake else ""
        return verification.verified, verification.message + suffix
    finally:
        if fake:
            fake.stop()


def preview(project_dir: str, name: str, limit: int, as_json: bool) -> int:
    project = load_project(project_dir)
    (sync,) = project.select([name])
    report = run_sync(project, sync, RunOptions(dry_run=True, preview_limit=limit))
    if not report.ok:
        print(f"error: {report.error}", file=sys.stderr)
        return FAILED
    if as_json:
        print(json.dumps({"sync": name, "sql": report.sql, "requests": report.sample_requests,
                          "rejected_by_reason": dict(report.rejected_by_reason), "notes": report.notes},
                         default=str), flush=True)
        return OK
    print(paint("-- SQL sent to the warehouse (values are bound parameters)", "dim"))
    print(report.sql)
    if not report.sample_events:
        print(paint("-- nothing to send: every row read is already sent, or not sendable (see below)", "dim"))
    else:
        print(paint(f"-- the first {len(report.sample_events)} event(s) as they would be sent (hashed)", "dim"))
    for body in report.sample_requests:
        print(json.dumps(body, indent=2, default=str))
    if report.rejected_by_reason:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected_by_reason.items()))
        print(paint(f"-- rows read but not sent: {reasons}", "dim"))
    return OK


def status(project_dir: str, as_json: bool) -> int:
    project = load_project(project_dir)
    with _reading(project) as store:
        rows = [inspection.sync_status(store, name) if store else inspection.never_run(name)
                for name in project.syncs]
    if as_json:
        for row in rows:
            print(json.dumps(row.__dict__, default=str), flush=True)
        return OK
    header = ("SYNC", "HEALTH", "WATERMARK", "LAST RUN (UTC)", "SENT", "REJECTED", "LEDGER", "OPEN REJECTS")
    table = [header] + [(r.sync, r.health, r.watermark or "-", str(r.last_run_at or "-")[:19],
                         str(r.last_events_sent if r.last_events_sent is not None else "-"),
                         str(r.last_events_rejected if r.last_events_rejected is not None else "-"),
                         str(r.ledger_size), str(r.unresolved_rejects)) for r in rows]
    _print_table(table)
    return OK


def history(project_dir: str, name: str, limit: int, as_json: bool) -> int:
    project = load_project(project_dir)
    project.select([name])
    with _reading(project) as store:
        runs = inspection.run_history(store, name, limit) if store else []
    if as_json:
        for run in runs:
            print(json.dumps(run, default=str), flush=True)
        return OK
    if not runs:
        print(f"{name}: no runs yet")
        return OK
    table = [("STARTED (UTC)", "MODE", "STATUS", "HEALTH", "READ", "SENT", "REJECTED", "DUPLICATES", "RETRIES",
              "WATERMARK AFTER")]
    table += [(str(r["started_at"])[:19], r["mode"], r["status"], r["health"] or "-", str(r["rows_read"] or 0),
               str(r["events_sent"] or 0), str(r["events_rejected"] or 0), str(r["duplicates_skipped"] or 0),
               str(r["retries"] or 0), r["watermark_after"] or "-") for r in runs]
    _print_table(table)
    failed = [r for r in runs if r["error"]]
    if failed:
        print(f"last error ({str(failed[0]['started_at'])[:19]}): {failed[0]['error']}")
    return OK


def rejects(project_dir: str, name: str, reason: str | None, include_resolved: bool, limit: int,
            export: str | None, as_json: bool) -> int:
    project = load_project(project_dir)
    project.select([name])
    with _reading(project) as store:
        if export:
            found = inspection.iter_reject_rows(store, name, reason, include_resolved) if store else iter(())
            written = _export(Path(export), found)
            print(f"wrote {written} reject(s) to {export}", file=sys.stderr)
            return OK
        counts = inspection.reject_counts(store, name, include_resolved) if store else {}
        rows = inspection.reject_rows(store, name, reason, include_resolved, limit) if store else []
    if as_json:
        print(json.dumps({"sync": name, "by_reason": counts, "rows": rows}, default=str), flush=True)
        return OK
    if not counts:
        print(f"{name}: no {'' if include_resolved else 'unresolved '}rejects")
        return OK
    _print_table([("REASON", "ROWS")] + [(k, str(v)) for k, v in counts.items()])
    print()
    _print_table([("RECORDED (UTC)", "REASON", "EVENT ID", "DETAIL")] +
                 [(str(r["recorded_at"])[:19], r["reason"], r["event_id"] or "-", (r["detail"] or "")[:80])
                  for r in rows])
    return OK


def _export(path: Path, rows: Iterator[dict[str, Any]]) -> int:
    """Write rows as they come (CSV or a JSON array); returns how many were written."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(f"--export {path}", "unknown file type", "use a .csv or .json file name")
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        if suffix == ".csv":
            writer = csv.DictWriter(handle, fieldnames=list(inspection.REJECT_COLUMNS))
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
                count += 1
            return count
        handle.write("[")
        for row in rows:
            handle.write(("," if count else "") + "\n  " + json.dumps(row, default=str))
            count += 1
        handle.write("\n]\n" if count else "]\n")
    return count


def reset(project_dir: str, name: str, yes: bool, force: bool = False) -> int:
    project = load_project(project_dir)
    project.select([name])
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"reset {name}", "needs confirmation", "pass --yes to reset without a prompt")
        answer = input(f"This forgets the watermark, ledger and rejects of {name!r}: the next sync re-reads "
                       f"everything (TikTok dedups only 48 h). Type the sync name to confirm: ")
        if answer.strip() != name:
            print("not reset", file=sys.stderr)
            return FAILED
    warehouse, store = _store(project)
    try:
        deleted = inspection.reset_sync(store, name, force)
    finally:
        warehouse.close()
    print(f"{name}: reset (" + ", ".join(f"{table} {count}" for table, count in deleted.items()) + " rows deleted)")
    return OK


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        line = "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        print(paint(line, "bold") if index == 0 else line)

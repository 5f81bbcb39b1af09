"""The workflow commands besides sync: init, schema, check, preview, status, history, rejects, reset.

Each takes the project as the CLI loaded it (--project, --target, --vars) and prints through connector.output.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import audience_commands, inspection
from .config import AudienceSettings, JobSettings, Project, SyncSettings
from .config_schema import SCHEMA_FILE
from .demo import PROJECT_SCHEMA, build_warehouse, write_project
from .errors import ConfigError, ConnectorError, MissingDatabase, WarehouseBusy
from .invocation import Invocation
from .output import MODE, emit_error, emit_note, emit_result, json_default, json_text, paint
from .report import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_UNVERIFIED, worst_exit_code
from .runner import FAKE_BASE_URL, RunOptions, run_sync
from .state import StateStore
from .tiktok import RetryPolicy, TikTokClient, verify_access
from .timeutil import utcnow
from .warehouse import open_warehouse, quietly

OK, FAILED, CONFIG, UNVERIFIED = EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNVERIFIED
DETAIL_WIDTH = 80  # display columns of a reject's detail in the table (--json and --export give it whole)
ELLIPSIS = "…"


def init(directory: str) -> int:
    root = Path(directory).resolve()
    if (root / "connector.yml").exists():
        raise ConfigError(str(root / "connector.yml"), "already exists", "init writes a new project: pick another DIR")
    root.mkdir(parents=True, exist_ok=True)
    write_project(root)
    build_warehouse(root / "warehouse.duckdb", 200, utcnow())
    shown = directory if directory != "." else None
    where = f" --project {shown}" if shown else ""
    text = (f"created a project in {root}:\n"
            "  connector.yml             warehouse, TikTok settings, the 'purchases' sync and an audience\n"
            "  queries/purchases.sql     the SQL that selects events (Jinja)\n"
            "  mappings/purchases.yml    columns → TikTok fields\n"
            "  queries/vip_buyers.sql    the people of the 'vip_buyers' audience (one row per person)\n"
            "  .env.example              copy to .env for your tokens\n"
            "  warehouse.duckdb          a sample warehouse with 200 orders and 100 customers\n"
            f"  {PROJECT_SCHEMA.as_posix():<25} the JSON Schema editors use to check connector.yml\n"
            f"next: tiktok-connector check{where}, then preview purchases{where} (and preview vip_buyers{where}), "
            f"then sync{where}")
    emit_result({"status": "created", "project": str(root)}, None if MODE.quiet else text)
    return OK


def schema() -> int:
    """Print the JSON Schema of connector.yml (the file the package ships)."""
    print(SCHEMA_FILE.read_text(encoding="utf-8"), end="")
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


def check(project: Project, jobs: list[JobSettings], test_event_code: str | None, invocation: Invocation) -> int:
    """Validate each job and verify the token; exit 0 only when everything was verified. A check that could
    verify nothing (TikTok unreachable, the DuckDB file busy) exits 4, apart from a failed check (1) and a
    configuration error (2)."""
    verified: dict[str, tuple[bool | None, str] | None] = {}  # audience token answers, by advertiser
    for job in jobs:
        if isinstance(job, AudienceSettings):
            result = audience_commands.check_audience(project, job, verified)
        else:
            result = _check_one(project, job, test_event_code)
        invocation.add(result, result["exit_code"])
        emit_result(result, _check_text(result))
    _schema_note(project)
    code = worst_exit_code(invocation.exit_codes)
    if not MODE.json and (len(jobs) > 1 or code) and not (MODE.quiet and not code):
        counts: dict[str, int] = {}
        for result in invocation.results:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in counts.items())
        meaning = {FAILED: ": a check failed", CONFIG: ": a configuration error",
                   UNVERIFIED: ": not everything could be verified"}.get(code, "")
        emit_result({"checked": len(jobs), "by_status": counts, "exit_code": code},
                    f"checked {len(jobs)}: {summary} (exit {code}{meaning})")
    return code


def _check_one(project: Project, sync: JobSettings, test_event_code: str | None) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []

    def add(name: str, status: str, message: str) -> None:
        checks.append({"check": name, "ok": {"ok": True, "failed": False}.get(status), "status": status,
                       "message": message})

    def result(code: int) -> dict[str, Any]:
        status = {OK: "ok", FAILED: "failed", CONFIG: "error", UNVERIFIED: "unverified"}[code]
        return {"sync": sync.name, "status": status, "exit_code": code, "checks": checks}

    try:
        report = run_sync(project, sync, RunOptions(dry_run=True, preview_limit=1))  # type: ignore[arg-type]
    except ConfigError as exc:
        add("configuration", "failed", str(exc))
        return result(CONFIG)
    except WarehouseBusy as exc:
        add("warehouse", "unverified", f"nothing could be read: {exc}")
        return result(UNVERIFIED)
    except ConnectorError as exc:
        add("warehouse", "failed", str(exc))
        return result(FAILED)
    if not report.ok:
        add("query", "failed", report.error or "the query failed")
        return result(FAILED)
    add("configuration", "ok", "connector.yml, query and mapping are valid")
    add("query", "ok", f"renders and runs; the mapped columns and cursor {sync.cursor!r} are in its result")  # type: ignore[union-attr]
    for note in report.notes:
        add("mapping", "note", note)
    verified, message = _verify(project, sync.event_source, sync.event_source_id, report, test_event_code)  # type: ignore[union-attr]
    if verified is None:
        add("tiktok", "unverified", f"not verified: {message}")
        return result(UNVERIFIED)
    add("tiktok", "ok" if verified else "failed", message)
    if verified:
        return result(OK)
    return result(CONFIG if not project.tiktok.access_token else FAILED)


_MARKS = {"ok": ("ok  ", "green"), "failed": ("FAIL", "red"), "unverified": ("????", "yellow"),
          "note": ("note", "yellow")}


def _check_text(result: dict[str, Any]) -> str | None:
    """The check's lines; with -q only its failed and unverified ones (None when there are none)."""
    lines = []
    for item in result["checks"]:
        if MODE.quiet and item["status"] in ("ok", "note"):
            continue
        mark, colour = _MARKS[item["status"]]
        lines.append(f"  {paint(mark, colour)} {item['check']}: {item['message']}")
    if MODE.quiet and not lines:
        return None
    return "\n".join([paint(result.get("sync") or result["audience"], "bold"), *lines])


def _schema_note(project: Project) -> None:
    copy = project.root / PROJECT_SCHEMA
    try:
        stale = copy.is_file() and copy.read_text(encoding="utf-8") != SCHEMA_FILE.read_text(encoding="utf-8")
    except OSError:
        return
    if stale:
        emit_note(f"note: {PROJECT_SCHEMA.as_posix()} is not this version's schema of connector.yml, so editors "
                  f"check against an older one: tiktok-connector schema > {PROJECT_SCHEMA.as_posix()}")


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
                                                max_elapsed=settings.max_retry_seconds),
                              max_requests_per_second=settings.max_requests_per_second)
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


def preview(project: Project, name: str, limit: int) -> int:
    (sync,) = project.select([name])
    if isinstance(sync, AudienceSettings):
        return audience_commands.preview(project, sync, limit)
    report = run_sync(project, sync, RunOptions(dry_run=True, preview_limit=limit))  # type: ignore[arg-type]
    if not report.ok:
        emit_error(report.error or "the query failed", FAILED, status="failed", sync=name)
        return FAILED
    data = {"sync": name, "sql": report.sql, "requests": report.sample_requests,
            "rejected_by_reason": dict(report.rejected_by_reason), "notes": report.notes}
    lines = [paint("-- SQL sent to the warehouse (values are bound parameters)", "dim"), report.sql or ""]
    if not report.sample_events:
        lines.append(paint("-- nothing to send: every row read is already sent, or not sendable (see below)", "dim"))
    else:
        lines.append(paint(f"-- the first {len(report.sample_events)} event(s) as they would be sent (hashed)", "dim"))
    lines += [json_text(body, indent=2) for body in report.sample_requests]
    if report.rejected_by_reason:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected_by_reason.items()))
        lines.append(paint(f"-- rows read but not sent: {reasons}", "dim"))
    emit_result(data, "\n".join(lines))
    return OK


def status(project: Project, jobs: list[JobSettings],
           cover_num: audience_commands.CoverNumLookup | None = None) -> int:
    """Each sync's watermark, last run and health, then each audience's members in state; `cover_num` asks
    TikTok for the audiences' matched size (audience_commands.cover_num_lookup)."""
    syncs = [job for job in jobs if isinstance(job, SyncSettings)]
    audiences = [job for job in jobs if isinstance(job, AudienceSettings)]
    with _reading(project) as store:
        rows = [inspection.sync_status(store, job.name) if store else inspection.never_run(job.name)
                for job in syncs]
        audience_rows = audience_commands.status_rows(project, audiences, store, cover_num) if audiences else []
    if MODE.json:
        for row in rows:
            emit_result(row.__dict__, None)
        for audience_row in audience_rows:
            emit_result(audience_row.__dict__, None)
        return OK
    texts = []
    if audience_rows:
        texts.append(audience_commands.status_table(audience_rows, _table, _time))
    if not rows:
        emit_result({"audiences": [row.__dict__ for row in audience_rows]}, "\n".join(texts))
        return OK
    header = ("SYNC", "HEALTH", "WATERMARK", "LAST RUN (UTC)", "LAST RUN SENT", "LAST RUN REJECTED", "LEDGER",
              "OPEN REJECTS")
    table = [header] + [(r.sync, r.health, r.watermark or "-", _time(r.last_run_at),
                         str(r.last_events_sent if r.last_events_sent is not None else "-"),
                         str(r.last_events_rejected if r.last_events_rejected is not None else "-"),
                         str(r.ledger_size), str(r.unresolved_rejects)) for r in rows]
    emit_result({"syncs": [row.__dict__ for row in rows], "audiences": [row.__dict__ for row in audience_rows]},
                "\n\n".join([_table(table), *texts]))
    return OK


def history(project: Project, name: str, limit: int) -> int:
    project.select([name])
    with _reading(project) as store:
        runs = inspection.run_history(store, name, limit) if store else []
    if MODE.json:
        for run in runs:
            emit_result(run, None)
        return OK
    if not runs:
        emit_result({"sync": name, "runs": []}, f"{name}: no runs yet")
        return OK
    table = [("STARTED (UTC)", "MODE", "STATUS", "HEALTH", "READ", "SENT", "REJECTED", "DUPLICATES", "RETRIES",
              "WATERMARK AFTER")]
    table += [(_time(r["started_at"]), r["mode"], r["status"], r["health"] or "-", str(r["rows_read"] or 0),
               str(r["events_sent"] or 0), str(r["events_rejected"] or 0), str(r["duplicates_skipped"] or 0),
               str(r["retries"] or 0), r["watermark_after"] or "-") for r in runs]
    text = _table(table)
    failed = [r for r in runs if r["error"]]
    if failed:
        text += f"\nlast error ({_time(failed[0]['started_at'])}): {_cell(failed[0]['error'])}"
    emit_result({"sync": name, "runs": runs}, text)
    return OK


def rejects(project: Project, name: str, reason: str | None, include_resolved: bool, limit: int,
            export: str | None) -> int:
    project.select([name])
    with _reading(project) as store:
        if export:
            found = inspection.iter_reject_rows(store, name, reason, include_resolved) if store else iter(())
            written = _export(Path(export), found)
            emit_note(f"wrote {written} reject(s) to {export}")
            emit_result({"sync": name, "exported": written, "file": export}, None)
            return OK
        counts = inspection.reject_counts(store, name, include_resolved) if store else {}
        rows = inspection.reject_rows(store, name, reason, include_resolved, limit) if store else []
    total = counts.get(reason, 0) if reason else sum(counts.values())
    data = {"sync": name, "by_reason": counts, "rows": rows, "shown": len(rows), "total": total, "limit": limit}
    if not counts:
        emit_result(data, f"{name}: no {'' if include_resolved else 'unresolved '}rejects")
        return OK
    text = _table([("REASON", "ROWS")] + [(k, str(v)) for k, v in counts.items()]) + "\n\n"
    text += _table([("RECORDED (UTC)", "REASON", "EVENT ID", "DETAIL")] +
                   [(_time(r["recorded_at"]), r["reason"], r["event_id"] or "-", _clipped(r["detail"] or ""))
                    for r in rows])
    what = f"{reason} rejects" if reason else "rejects"
    more = "; --limit N shows more, --export FILE writes them all" if len(rows) < total else ""
    text += (f"\n\n{len(rows)} of {total} {what} shown, newest first{more}; details longer than {DETAIL_WIDTH} "
             f"columns end in {ELLIPSIS} (--json and --export give them whole)")
    emit_result(data, text)
    return OK


def _time(value: Any) -> str:
    """A state time for a table: to the second, in UTC (the column header says so)."""
    return str(value)[:19] if value is not None else "-"


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
                writer.writerow({key: json_default(value) if isinstance(value, dt.date) else value
                                 for key, value in row.items()})
                count += 1
            return count
        handle.write("[")
        for row in rows:
            handle.write(("," if count else "") + "\n  " + json_text(row))
            count += 1
        handle.write("\n]\n" if count else "]\n")
    return count


def reset(project: Project, name: str, yes: bool, force: bool = False) -> int:
    (job,) = project.select([name])
    if isinstance(job, AudienceSettings):
        return _reset_audience(project, name, yes, force)
    prompt = (f"This forgets the watermark, ledger and rejects of {name!r}: the next sync re-reads everything "
              "(TikTok dedups only 48 h). Type the sync name to confirm: ")
    if not yes and not _confirmed(name, "sync", prompt):
        return FAILED
    deleted, counts = _state_reset(project, inspection.reset_sync, name, force)
    emit_result({"sync": name, "status": "reset", "deleted": deleted}, None if MODE.quiet else f"{name}: reset ({counts})")
    return OK


def _state_reset(project: Project, reset_state: Callable[[StateStore, str, bool], dict[str, int]], name: str,
                 force: bool) -> tuple[dict[str, int], str]:
    """Rows deleted per state table by `reset_state`, and as text ("watermarks 1, ledger 5 rows deleted")."""
    warehouse, store = _store(project)
    try:
        deleted = reset_state(store, name, force)
    finally:
        warehouse.close()
    return deleted, ", ".join(f"{table} {count}" for table, count in deleted.items()) + " rows deleted"


def _confirmed(name: str, kind: str, prompt: str) -> bool:
    """Ask on the terminal (reset without --yes); False, said, when what was typed is not the name."""
    if not sys.stdin.isatty():
        raise ConfigError(f"reset {name}", "needs confirmation", "pass --yes to reset without a prompt")
    if input(prompt).strip() != name:
        emit_error(f"not reset: the name typed was not the {kind}'s", FAILED, status="failed", **{kind: name})
        return False
    return True


def _reset_audience(project: Project, name: str, yes: bool, force: bool) -> int:
    """Forget an audience's membership state; the audience in TikTok is left as it is."""
    if not yes and not _confirmed(name, "audience", audience_commands.reset_prompt(name)):
        return FAILED
    deleted, counts = _state_reset(project, audience_commands.reset_audience, name, force)
    text = f"{name}: reset ({counts}); the audience in TikTok is unchanged"
    emit_result({"audience": name, "status": "reset", "deleted": deleted}, None if MODE.quiet else text)
    return OK


def _cell(value: Any) -> str:
    """A table cell on one line: line breaks, tabs and other control characters become spaces or U+FFFD."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(" " if char in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
                   else "\ufffd" if unicodedata.category(char)[0] == "C" else char for char in text)


def display_width(text: str) -> int:
    """Terminal columns: wide (East Asian) characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
               for char in text)


def _clipped(text: str, width: int = DETAIL_WIDTH) -> str:
    """`text` on one line in at most `width` columns; cut ones end in an ellipsis."""
    text = _cell(text)
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += display_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + ELLIPSIS


def _table(rows: list[tuple[str, ...]]) -> str:
    cells = [[_cell(cell) for cell in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for index, row in enumerate(cells):
        line = "  ".join(cell + " " * (width - display_width(cell)) for cell, width in zip(row, widths)).rstrip()
        lines.append(paint(line, "bold") if index == 0 else line)
    return "\n".join(lines)

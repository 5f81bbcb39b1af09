"""One invocation of the CLI or the Python API: its jobs' reports, its exit code, and its run-results file.

A job ends as a report whatever happens to it (the same object through the CLI's --json and `connector.sync`):
another run holding the sync is a `skipped` report, a configuration mistake found when it starts an `error`
report, a failure outside the run's own bookkeeping (the warehouse cannot be opened) a `failed` one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .audience_run import run_audience
from .config import AudienceSettings, JobSettings, Project
from .errors import ConfigError, ConnectorError, SyncLocked
from .output import json_text
from .redaction import redact
from .report import AudienceReport, SyncReport, worst_exit_code
from .runner import RunOptions, run_sync

RESULTS_SCHEMA_VERSION = 1


def run_job(project: Project, job: JobSettings, options: RunOptions | None = None) -> SyncReport:
    """Run one sync or audience and return its report, never raising for what happens to that job alone."""
    options = options or RunOptions()
    kind: type[SyncReport] = AudienceReport if job.kind == "audience" else SyncReport
    mode = "audience" if job.kind == "audience" else options.mode
    try:
        if isinstance(job, AudienceSettings):
            return run_audience(project, job, options)
        return run_sync(project, job, options)
    except SyncLocked as exc:
        return kind.skipped(job.name, mode, options.dry_run, str(exc))
    except ConfigError as exc:
        return kind.config_error(job.name, mode, options.dry_run, str(exc))
    except ConnectorError as exc:  # raised before the run could record itself: opening the warehouse
        report = kind(sync=job.name, mode=mode, dry_run=options.dry_run, status="failed",
                      error=str(exc), health_label="failing")
        full = getattr(exc, "full_text", None)
        report.error_detail = redact(full) if full else None
        return report


def run_jobs(project: Project, jobs: list[JobSettings], options: RunOptions | None = None, threads: int = 1,
             done: Callable[[SyncReport], None] | None = None,
             run: Callable[[Project, JobSettings, RunOptions], SyncReport] = run_job) -> list[SyncReport]:
    """Run `jobs`, up to `threads` at a time in this process, and return their reports in the order they
    ended; `done` sees each report as its job ends, on the calling thread (which prints it). Jobs running
    together share their access token's rate limiter (connector.ratelimit); a sync's lease still keeps two
    runs of one sync apart. `options.progress`, when set, is called by every job's thread; `run` runs one
    job (run_job)."""
    options = options or RunOptions()
    reports: list[SyncReport] = []

    def finished(report: SyncReport) -> None:
        reports.append(report)
        if done is not None:
            done(report)

    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            finished(run(project, job, options))
        return reports
    together = min(threads, len(jobs))
    stop = threading.Event()
    with ThreadPoolExecutor(together, thread_name_prefix="job") as pool:
        futures = [pool.submit(run, project, job, replace(options, progress=_stoppable(options.progress, stop)))
                   for job in jobs]
        try:
            for future in as_completed(futures):
                finished(future.result())
        except KeyboardInterrupt:  # Ctrl-C reaches this thread only: the jobs stop at their next window of rows
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return reports


def _stoppable(progress: Callable[[SyncReport], None] | None,
               stop: threading.Event) -> Callable[[SyncReport], None]:
    """The progress callback of a job run on a worker thread, which also ends the job as Ctrl-C would
    (what is in flight is still sent and committed, as when Ctrl-C stops a job on the main thread)."""
    def report_progress(report: SyncReport) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        if progress is not None:
            progress(report)
    return report_progress


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Invocation:
    """What one command did: when, with which arguments, and each job's result (reports or check results)."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)
    invocation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: dt.datetime = field(default_factory=utc_now)
    finished_at: dt.datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    error: str | None = None  # a mistake that stopped the invocation before or between its jobs

    def add(self, result: dict[str, Any], exit_code: int) -> None:
        self.results.append(result)
        self.exit_codes.append(exit_code)

    def add_report(self, report: SyncReport) -> None:
        self.add(report.to_dict(), report.exit_code)

    @property
    def exit_code(self) -> int:
        return worst_exit_code(self.exit_codes)

    def document(self, exit_code: int, version: str) -> dict[str, Any]:
        """The run-results document (like dbt's run_results.json), redacted."""
        finished = self.finished_at or utc_now()
        doc = {
            "metadata": {"schema_version": RESULTS_SCHEMA_VERSION, "tool": "tiktok-connector",
                         "tool_version": version, "invocation_id": self.invocation_id,
                         "generated_at": finished.isoformat()},
            "command": self.command, "args": self.args,
            "started_at": self.started_at.isoformat(), "finished_at": finished.isoformat(),
            "elapsed_seconds": round((finished - self.started_at).total_seconds(), 3),
            "exit_code": exit_code, "error": self.error, "results": self.results,
        }
        return json.loads(redact(json_text(doc)))

    def write(self, path: Path, exit_code: int, version: str) -> None:
        """Write the document whole or not at all: a reader never sees half a file."""
        text = json.dumps(self.document(exit_code, version), indent=2) + "\n"
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def check_output_path(option: str, path: Path) -> None:
    """Refuse an --output FILE that cannot be written before anything runs (exit 2)."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}", "is a directory", "give a file name, e.g. run_results.json")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}", f"the folder {path.parent} does not exist", "create it first")

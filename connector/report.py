"""The report of one sync run: what the CLI prints, what --json emits and what the Python API returns.

Outcomes and exit codes, the same for the CLI and the Python API (`report.exit_code`):

status    exit_code  ok     when
success   0          True   the run finished and its reject rate is within max_reject_rate
success   3          True   partial: the run finished, but rejected more rows than max_reject_rate
                            (`limit_crossed` says by how much); the CLI headline says PARTIAL
skipped   0          True   another run holds the sync's lease: nothing was done
failed    1          False  the run stopped: the query, the warehouse, TikTok or the state failed
error     2          False  a configuration mistake found when the run started (file, key, hint)
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .reasons import SKIP_REASONS


@dataclass
class SyncReport:
    sync: str
    mode: str = "sync"  # sync | test | backfill | retry
    dry_run: bool = False
    status: str = "running"  # success | failed | skipped | error (see the module docstring)
    run_id: str | None = None
    rows_read: int = 0
    rows_deferred: int = 0
    events_outside_range: int = 0
    events_built: int = 0
    events_sent: int = 0
    duplicates_skipped: int = 0
    batches: int = 0
    retries: int = 0
    batches_split: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    watermark_before: str | None = None
    watermark: str | None = None
    duration_seconds: float = 0.0
    state_seconds: float = 0.0  # time spent committing checkpoints
    error: str | None = None
    error_detail: str | None = None  # the warehouse's unmasked error text: for the terminal with -v, never stored
    notes: list[str] = field(default_factory=list)
    health_label: str | None = None
    max_reject_rate: float | None = None  # the limit the run was judged against (set by health())
    sql: str | None = None  # the SQL sent to the warehouse (values are bound parameters, not in it)
    sample_requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sample_events(self) -> list[dict[str, Any]]:
        return [event for request in self.sample_requests for event in request["data"]]

    @property
    def events_rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def events_outside_window(self) -> int:
        return sum(n for reason, n in self.rejected_by_reason.items() if reason in SKIP_REASONS)

    def counts(self) -> dict[str, int]:
        """The counters stored in the runs table."""
        return {"rows_read": self.rows_read, "events_sent": self.events_sent,
                "events_rejected": self.events_rejected, "events_skipped": self.events_outside_window,
                "duplicates_skipped": self.duplicates_skipped, "batches": self.batches, "retries": self.retries}

    @property
    def reject_rate(self) -> float:
        """Invalid rows among the rows that could have been sent (rows outside the window do not count)."""
        invalid = self.events_rejected - self.events_outside_window
        total = invalid + self.events_built
        return invalid / total if total else 0.0

    def health(self, max_reject_rate: float) -> str:
        """ok, rejecting (above `max_reject_rate`) or failing; the limit is kept for `limit_crossed`."""
        self.max_reject_rate = max_reject_rate
        if self.status != "success":
            return "failing"
        return "rejecting" if self.reject_rate > max_reject_rate else "ok"

    @property
    def ok(self) -> bool:
        """Nothing failed: the run succeeded (partial included: see `exit_code`) or was skipped."""
        return self.status in ("success", "skipped")

    @property
    def exit_code(self) -> int:
        """What the CLI exits with for this run alone: 0, 3 partial, 1 failed, 2 configuration error."""
        return exit_code_of(self.status, self.health_label)

    @property
    def limit_crossed(self) -> str | None:
        """Why a successful run is partial (exit 3): which limit it crossed, and by how much."""
        if self.exit_code != EXIT_PARTIAL:
            return None
        invalid = self.events_rejected - self.events_outside_window
        limit = f" above max_reject_rate {self.max_reject_rate:g}" if self.max_reject_rate is not None else ""
        return (f"max_reject_rate crossed: {invalid} of {invalid + self.events_built} rows were invalid "
                f"({self.reject_rate:.1%}; rows outside the attribution window not counted),{limit}")

    @property
    def outcome(self) -> str:
        """The headline word: SUCCESS, PARTIAL, FAILED, SKIPPED or ERROR."""
        return "PARTIAL" if self.exit_code == EXIT_PARTIAL else self.status.upper()

    @classmethod
    def skipped(cls, sync: str, mode: str, dry_run: bool, reason: str) -> SyncReport:
        """Another run holds the sync: nothing was done (exit 0, as the CLI's "skipped")."""
        return cls(sync=sync, mode=mode, dry_run=dry_run, status="skipped", notes=[reason])

    @classmethod
    def config_error(cls, sync: str, mode: str, dry_run: bool, error: str) -> SyncReport:
        """A configuration mistake found when the run started (exit 2)."""
        return cls(sync=sync, mode=mode, dry_run=dry_run, status="error", error=error, health_label="failing")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "sync": self.sync, "status": self.status, "mode": self.mode, "dry_run": self.dry_run,
            "run_id": self.run_id,
            "rows_read": self.rows_read, "rows_deferred": self.rows_deferred,
            "events_outside_range": self.events_outside_range,
            "events_sent": self.events_sent, "events_rejected": self.events_rejected, "events_outside_window": self.events_outside_window,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "duplicates_skipped": self.duplicates_skipped, "batches": self.batches, "retries": self.retries,
            "batches_split": self.batches_split, "reject_rate": round(self.reject_rate, 4),
            "health": self.health_label, "watermark_before": self.watermark_before,
            "watermark": self.watermark, "duration_seconds": round(self.duration_seconds, 3),
            "state_seconds": round(self.state_seconds, 3), "peak_rss_mb": peak_rss_mb(),
            "events_per_second": round(self.events_sent / self.duration_seconds) if self.duration_seconds else 0,
            "error": self.error, "notes": self.notes, "exit_code": self.exit_code,
            "limit_crossed": self.limit_crossed,
        }
        if self.dry_run or self.mode == "test":
            out["events_to_send"] = self.events_built - self.duplicates_skipped
            out["sample_events"] = self.sample_events
        return out

    def to_text(self) -> str:
        verb = "would send" if self.dry_run else ("sent as test events" if self.mode == "test" else "sent")
        count = self.events_built - self.duplicates_skipped if self.dry_run else self.events_sent
        mode = f"{self.mode}, dry run" if self.dry_run else self.mode
        if self.status in ("skipped", "error"):
            reason = self.error or "; ".join(self.notes)
            return f"{self.sync}: {self.outcome} ({mode}): {reason}"
        lines = [
            f"{self.sync}: {self.outcome} ({mode}) in {self.duration_seconds:.2f}s",
            f"  rows read {self.rows_read}, events {verb} {count} in {self.batches} batch(es), "
            f"duplicates skipped {self.duplicates_skipped}, retries {self.retries}",
            f"  watermark {self.watermark_before or '(none)'} -> {self.watermark or '(none)'}",
        ]
        lines += self._rejected_lines()
        if self.events_outside_range:
            lines.append(f"  events outside the backfill range: {self.events_outside_range}")
        return "\n".join(lines + self._closing_lines())

    def _rejected_lines(self) -> list[str]:
        if not self.rejected_by_reason:
            return []
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.rejected_by_reason.items()))
        return [f"  not sent {self.events_rejected}: {reasons}"]

    def _closing_lines(self) -> list[str]:
        """Notes, the limit crossed and the error: the last lines of every report's summary."""
        lines = [f"  note: {note}" for note in self.notes]
        if self.limit_crossed:
            lines.append(f"  partial (exit 3): {self.limit_crossed}")
        if self.error:
            lines.append(f"  error: {self.error}")
        return lines


EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PARTIAL, EXIT_UNVERIFIED = 0, 1, 2, 3, 4


def exit_code_of(status: str, health: str | None) -> int:
    """One run's exit code from its status and health (see the module docstring)."""
    if status == "error":
        return EXIT_CONFIG
    if status in ("failed", "running"):
        return EXIT_FAILED
    return EXIT_PARTIAL if status == "success" and health == "rejecting" else EXIT_OK


def worst_exit_code(codes: list[int]) -> int:
    """An invocation's exit code from its jobs': a configuration error, then a failure, then a check that
    verified nothing, then partial."""
    for code in (EXIT_CONFIG, EXIT_FAILED, EXIT_UNVERIFIED, EXIT_PARTIAL):
        if code in codes:
            return code
    return EXIT_OK


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far (Linux and macOS), for the report.

    On Linux it is VmHWM: getrusage's ru_maxrss also counts the memory of the parent that started this
    process (a scheduler's worker, a benchmark) when that was larger."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@dataclass
class AudienceReport(SyncReport):
    """The report of one audience run: the same outcomes, exit codes and bookkeeping as a sync's (`sync` is
    the audience's name), with what an audience run counts. `events_sent` counts the people sent in add and
    delete requests (the runs table's column)."""

    mode: str = "audience"
    audience_id: str | None = None
    members_before: int = 0
    members_added: int = 0
    members_removed: int = 0
    members_changed: int = 0  # identifiers changed: their old hashes deleted, the new ones added
    members_unchanged: int = 0
    members_kept: int = 0  # left as they are although the query no longer has them (add_only, duplicates)
    requests_sent: int = 0
    hashes_deleted: int = 0
    to_send: int = 0  # dry run: people the run would send in add requests

    @property
    def audience(self) -> str:
        return self.sync

    @property
    def members_after(self) -> int:
        return self.members_before + self.members_added - self.members_removed

    @property
    def reject_rate(self) -> float:
        """Rows not usable among the rows read."""
        return self.events_rejected / self.rows_read if self.rows_read else 0.0

    @property
    def limit_crossed(self) -> str | None:
        if self.exit_code != EXIT_PARTIAL:
            return None
        limit = f" above max_reject_rate {self.max_reject_rate:g}" if self.max_reject_rate is not None else ""
        return (f"max_reject_rate crossed: {self.events_rejected} of {self.rows_read} rows were not usable "
                f"({self.reject_rate:.1%}),{limit}")

    def counts(self) -> dict[str, int]:
        counts = super().counts()
        counts["events_skipped"] = 0
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "audience": self.sync, "kind": "audience", "status": self.status, "dry_run": self.dry_run,
            "run_id": self.run_id, "audience_id": self.audience_id, "rows_read": self.rows_read,
            "members_added": self.members_added, "members_removed": self.members_removed,
            "members_changed": self.members_changed, "members_unchanged": self.members_unchanged,
            "members_kept": self.members_kept, "members_before": self.members_before,
            "members_after": self.members_after, "people_rejected": self.events_rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "requests": self.requests_sent, "hashes_deleted": self.hashes_deleted, "retries": self.retries,
            "reject_rate": round(self.reject_rate, 4), "health": self.health_label,
            "duration_seconds": round(self.duration_seconds, 3), "state_seconds": round(self.state_seconds, 3),
            "peak_rss_mb": peak_rss_mb(), "error": self.error, "notes": self.notes, "exit_code": self.exit_code,
            "limit_crossed": self.limit_crossed,
            **({"people_to_send": self.to_send} if self.dry_run else {}),
        }

    def to_text(self) -> str:
        mode = "audience, dry run" if self.dry_run else "audience"
        if self.status in ("skipped", "error"):
            reason = self.error or "; ".join(self.notes)
            return f"{self.sync}: {self.outcome} ({mode}): {reason}"
        verb = "would add" if self.dry_run else "added"
        lines = [
            f"{self.sync}: {self.outcome} ({mode}) in {self.duration_seconds:.2f}s",
            f"  rows read {self.rows_read}, members {verb} {self.members_added}, removed {self.members_removed}, "
            f"changed {self.members_changed}, unchanged {self.members_unchanged}",
            f"  TikTok audience {self.audience_id or '(none yet)'}: {self.members_after} member(s) in state, "
            f"{self.requests_sent} request(s), retries {self.retries}",
        ]
        return "\n".join(lines + self._rejected_lines() + self._closing_lines())

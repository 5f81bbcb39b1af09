"""tiktok-connector: offline conversion events from a warehouse to the TikTok Events API 2.0.

For orchestrators (Airflow, Dagster, cron scripts):

    from connector import load_project, sync
    reports = sync("path/to/project", ["purchases"])      # list of SyncReport, as the CLI prints them
    if any(r.exit_code for r in reports):                 # what the CLI would exit with: 1, 2 or 3
        raise RuntimeError([r.limit_crossed or r.error for r in reports if r.exit_code])

Each report's `exit_code` is the CLI's for that run (connector.report draws the table): 0 success or skipped
(`status == "skipped"`: another run holds the sync), 1 failed, 2 a configuration mistake found when the run
started, 3 partial (`limit_crossed` says which limit). `report.ok` is "nothing failed" (0 or 3, or skipped).
`report.to_dict()` is the object `tiktok-connector sync --json` prints for the run, whatever its outcome.
Audiences (`audiences:` in connector.yml) run too, after the syncs; their reports are AudienceReport (a
SyncReport with `audience`, `members_added`, `members_removed`, `members_unchanged`, `audience_id`).
"""

from __future__ import annotations

import os
from typing import Any

from .config import AudienceSettings, Project, SyncSettings, load_project
from .errors import (ConfigError, ConnectorError, FatalAPIError, RetriableAPIError, StateError, SyncLocked,
                     TikTokError, WarehouseError)
from .audience_run import run_audience
from .invocation import run_job
from .report import AudienceReport, SyncReport
from .runner import RunOptions, run_sync

__all__ = [
    "AudienceReport", "AudienceSettings", "ConfigError", "ConnectorError", "FatalAPIError", "Project", "RetriableAPIError", "RunOptions",
    "StateError", "SyncLocked", "SyncReport", "SyncSettings", "TikTokError", "WarehouseError", "load_project",
    "run_audience", "run_sync", "sync",
]


def sync(project_dir: str | os.PathLike[str] = ".", names: list[str] | None = None,
         options: RunOptions | None = None, *, target: str | None = None, vars: dict[str, Any] | None = None,
         select: list[str] | None = None, exclude: list[str] | None = None) -> list[SyncReport]:
    """Run the named syncs (all when neither `names` nor `select` is given) of the project in `project_dir`;
    one report per sync. `target`, `vars`, `select` and `exclude` are the CLI's --target, --vars, --select and
    --exclude.

    Raises ConfigError for a mistake in the project as a whole (connector.yml, an unknown name or selector),
    before anything runs. Whatever happens to one sync comes back as its report, as the CLI prints it: a
    failure as status "failed" (exit_code 1), a mistake in its mapping or query file as status "error"
    (exit_code 2), a crossed max_reject_rate as exit_code 3, and another run holding the sync as status
    "skipped" (exit_code 0; `run_sync` raises SyncLocked there instead)."""
    project = load_project(project_dir, target, vars)
    return [run_job(project, settings, options) for settings in project.select(names, select, exclude)]

"""tiktok-connector: offline conversion events from a warehouse to the TikTok Events API 2.0.

For orchestrators (Airflow, Dagster, cron scripts):

    from connector import load_project, sync
    reports = sync("path/to/project", ["purchases"])      # list of SyncReport, as the CLI prints them
    assert all(r.ok for r in reports)
"""

from __future__ import annotations

import os
from typing import Any

from .config import AudienceSettings, Project, SyncSettings, load_project
from .errors import (ConfigError, ConnectorError, FatalAPIError, RetriableAPIError, StateError, SyncLocked,
                     TikTokError, WarehouseError)
from .report import SyncReport
from .runner import RunOptions, run_sync

__all__ = [
    "AudienceSettings", "ConfigError", "ConnectorError", "FatalAPIError", "Project", "RetriableAPIError", "RunOptions",
    "StateError", "SyncLocked", "SyncReport", "SyncSettings", "TikTokError", "WarehouseError", "load_project",
    "run_sync", "sync",
]


def sync(project_dir: str | os.PathLike[str] = ".", names: list[str] | None = None,
         options: RunOptions | None = None, *, target: str | None = None, vars: dict[str, Any] | None = None,
         select: list[str] | None = None, exclude: list[str] | None = None) -> list[SyncReport]:
    """Run the named syncs (all when neither `names` nor `select` is given) of the project in `project_dir`;
    one report per sync. `target`, `vars`, `select` and `exclude` are the CLI's --target, --vars, --select and
    --exclude.

    Raises ConfigError for a configuration mistake and SyncLocked when another run holds a sync; a sync
    that failed while running comes back as a report with `ok == False` (check it, or raise yourself)."""
    project = load_project(project_dir, target, vars)
    return [run_sync(project, settings, options) for settings in project.select(names, select, exclude)]

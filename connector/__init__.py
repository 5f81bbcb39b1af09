"""tiktok-connector: offline conversion events from a warehouse to the TikTok Events API 2.0.

For orchestrators (Airflow, Dagster, cron scripts):

    from connector import load_project, sync
    reports = sync("path/to/project", ["purchases"])      # list of SyncReport, as the CLI prints them
    assert all(r.ok for r in reports)
"""

from __future__ import annotations

import os

from .config import Project, SyncSettings, load_project
from .errors import (ConfigError, ConnectorError, FatalAPIError, RetriableAPIError, StateError, SyncLocked,
                     TikTokError, WarehouseError)
from .report import SyncReport
from .runner import RunOptions, run_sync

__all__ = [
    "ConfigError", "ConnectorError", "FatalAPIError", "Project", "RetriableAPIError", "RunOptions", "StateError",
    "SyncLocked", "SyncReport", "SyncSettings", "TikTokError", "WarehouseError", "load_project", "run_sync", "sync",
]


def sync(project_dir: str | os.PathLike[str] = ".", names: list[str] | None = None,
         options: RunOptions | None = None) -> list[SyncReport]:
    """Run the named syncs (all when None) of the project in `project_dir`; one report per sync.

    Raises ConfigError for a configuration mistake and SyncLocked when another run holds a sync; a sync
    that failed while running comes back as a report with `ok == False` (check it, or raise yourself)."""
    project = load_project(project_dir)
    return [run_sync(project, settings, options) for settings in project.select(names)]

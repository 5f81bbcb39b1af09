"""Alerts: one webhook call (Slack-compatible) when a sync's health changes, with counts and never PII."""

from __future__ import annotations

import logging
from typing import Any

import requests

from .report import SyncReport

log = logging.getLogger("connector.alerts")
BAD = frozenset({"failing", "rejecting"})


def alert_payload(report: SyncReport, previous: str | None, current: str) -> dict[str, Any] | None:
    """The message for a change of health, or None when nothing changed worth saying."""
    if current in BAD and current != previous:
        what = {"failing": f"failed: {report.error}",
                "rejecting": f"rejected {report.reject_rate:.1%} of its rows"}[current]
        text = f":rotating_light: tiktok-connector sync '{report.sync}' {what}"
    elif current == "ok" and previous in BAD:
        text = f":white_check_mark: tiktok-connector sync '{report.sync}' recovered"
    else:
        return None
    return {
        "text": text, "sync": report.sync, "health": current, "previous_health": previous,
        "run_id": report.run_id, "events_sent": report.events_sent, "events_rejected": report.events_rejected,
        "rejected_by_reason": dict(report.rejected_by_reason), "reject_rate": round(report.reject_rate, 4),
        "watermark": report.watermark,
    }


def send_alert(url: str, payload: dict[str, Any], timeout: float = 10.0) -> str | None:
    """POST the alert; return a note when it could not be delivered (an alert never fails a sync)."""
    try:
        response = requests.post(url, json=payload, timeout=timeout)
    except requests.RequestException as exc:
        return f"the alert webhook could not be reached ({exc.__class__.__name__})"
    if response.status_code >= 300:
        return f"the alert webhook answered HTTP {response.status_code}"
    return None

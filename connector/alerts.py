"""Alerts: one webhook call (Slack-compatible) when a sync's health changes, with counts and never PII."""

from __future__ import annotations

import json
import logging
from typing import Any

from .redaction import redact
from .report import SyncReport
from .transport import AttemptFailed, is_redirect, pooled_session, post, redirect_target

log = logging.getLogger("connector.alerts")
BAD = frozenset({"failing", "rejecting"})
ALERT_SECONDS = 5.0  # connect + answer, in total: an alert never holds a run up for longer


def alert_payload(report: SyncReport, previous: str | None, current: str) -> dict[str, Any] | None:
    """The message for a change of health, or None when nothing changed worth saying."""
    kind = "audience" if report.mode == "audience" else "sync"
    if current in BAD and current != previous:
        what = {"failing": f"failed: {report.error}",
                "rejecting": f"rejected {report.reject_rate:.1%} of its rows"}[current]
        text = f":rotating_light: tiktok-connector {kind} '{report.sync}' {what}"
    elif current == "ok" and previous in BAD:
        text = f":white_check_mark: tiktok-connector {kind} '{report.sync}' recovered"
    else:
        return None
    return {
        "text": redact(text), "sync": report.sync, "health": current, "previous_health": previous,
        "run_id": report.run_id, "events_sent": report.events_sent, "events_rejected": report.events_rejected,
        "rejected_by_reason": dict(report.rejected_by_reason), "reject_rate": round(report.reject_rate, 4),
        "watermark": report.watermark,
    }


def send_alert(url: str, payload: dict[str, Any], seconds: float = ALERT_SECONDS) -> str | None:
    """POST the alert once, within `seconds`, never following a redirect (the payload would go to another
    host); return a note when it could not be delivered (an alert never fails a sync). Notes never name the
    webhook URL: Slack's carries its secret in the path."""
    try:
        session = pooled_session(url)
    except ValueError:  # a URL that is not one: its proxy settings cannot be looked up
        return "the alert webhook could not be called: alert_webhook_url is not a valid URL"
    try:
        response = post(session, url, json.dumps(payload).encode(), {"Content-Type": "application/json"}, seconds)
    except AttemptFailed as exc:
        return f"the alert webhook could not be reached ({exc.problem})"
    finally:
        session.close()
    if is_redirect(response):
        return (f"the alert webhook answered HTTP {response.status_code}, redirecting to {redirect_target(response)}; "
                "not followed: set alert_webhook_url to the final address")
    if response.status_code >= 300:
        return f"the alert webhook answered HTTP {response.status_code}"
    return None

"""The stable reason codes for rows that are not sent; the rejects table, reports and docs share them."""

from __future__ import annotations

from .values import MAX_ID_LENGTH

REASONS: dict[str, str] = {
    "null_cursor": "the cursor column is NULL, so the row cannot be placed behind a watermark",
    "missing_event_id": "event_id is empty: TikTok deduplicates by it, so it is required",
    "invalid_event_id": "event_id is no id: a list or map, NaN or infinite, a boolean, bytes or text that is "
                        f"not valid UTF-8, or longer than {MAX_ID_LENGTH} characters",
    "missing_event": "event (the event name) is empty",
    "unknown_event": "the event name is not one TikTok accepts for this event source",
    "missing_event_time": "event_time is empty",
    "invalid_event_time": "event_time is no time of the years 1 to 9999: not a timestamp, date, ISO string or "
                          "Unix time (seconds, milliseconds, microseconds or nanoseconds), or NaN/infinite",
    "event_too_old": "event_time is older than the attribution window",
    "event_in_future": "event_time is in the future (beyond future_tolerance_seconds)",
    "missing_event_source_id": "no event_source_id in the sync settings or the mapped column",
    "missing_required_field": "a field the event source requires is empty (app: app.app_id, crm: lead.lead_id)",
    "no_match_keys": "no usable email or phone (offline events match on those only); for an audience, no usable "
                     "identifier",
    "invalid_currency": "properties.currency is not one of TikTok's supported currencies",
    "invalid_value": "a number field is not a number, is negative, or is 2^63 or more",
    "invalid_field": "a field's value breaks TikTok's rule for it (enum, type), is a list or map where one value "
                     f"goes, is bytes or text that is not valid UTF-8, or is an id longer than {MAX_ID_LENGTH} "
                     "characters",
    "rejected_by_tiktok": "TikTok answered 40002/40000 for this event; its message is stored",
}

# Reasons a person is not sent to an audience; no_match_keys (no usable identifier) applies to them too.
AUDIENCE_REASONS: dict[str, str] = {
    "missing_member_id": "audiences: the member id column is empty, so the person cannot be followed across runs",
    "duplicate_member_id": "audiences: the member id is on more than one row of the query result; none of them is "
                           "sent and the member's membership is left as it is",
    "no_match_keys": REASONS["no_match_keys"],
}

SKIP_REASONS = frozenset({"event_too_old", "event_in_future"})

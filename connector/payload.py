"""TikTok event fields: every path a mapping may target, its type, and the event sources it applies to.

This is the one module that spells TikTok's field names.
"""

from __future__ import annotations

from typing import Any

ALL = frozenset({"offline", "web", "app", "crm"})
WEB_APP = frozenset({"web", "app"})
WEB = frozenset({"web"})
APP = frozenset({"app"})

ITEM_MARK = "[]"
CONTENTS = "properties.contents"

# path → (kind, sources it applies to). Kinds are interpreted by events.py.
FIELDS: dict[str, tuple[str, frozenset[str]]] = {
    "event": ("event", ALL),
    "event_id": ("id", ALL),
    "event_time": ("time", ALL),
    "event_source_id": ("id", ALL),
    "limited_data_use": ("bool", WEB_APP),
    "user.email": ("email", ALL),
    "user.phone": ("phone", ALL),
    "user.external_id": ("external_id", frozenset({"web", "crm", "app"})),
    "user.ttclid": ("str", WEB),
    "user.ttp": ("str", WEB),
    "user.ip": ("str", WEB_APP),
    "user.user_agent": ("str", WEB_APP),
    "user.locale": ("str", WEB_APP),
    "user.idfa": ("idfa", APP),
    "user.idfv": ("idfa", APP),
    "user.gaid": ("gaid", APP),
    "user.att_status": ("att_status", APP),
    "properties.value": ("money", ALL),
    "properties.currency": ("currency", ALL),
    "properties.order_id": ("id", ALL),
    "properties.shop_id": ("id", ALL),
    "properties.content_type": ("content_type", ALL),
    "properties.content_ids": ("id_list", ALL),
    "properties.num_items": ("int", ALL),
    "properties.search_string": ("str", ALL),
    "properties.description": ("str", ALL),
    "properties.customer_type": ("customer_type", WEB_APP),
    "properties.event_channel": ("event_channel", frozenset({"offline", "crm"})),
    CONTENTS: ("contents", ALL),
    "properties.contents[].content_id": ("id", ALL),
    "properties.contents[].content_name": ("str", ALL),
    "properties.contents[].content_category": ("str", ALL),
    "properties.contents[].brand": ("str", ALL),
    "properties.contents[].price": ("number", ALL),
    "properties.contents[].quantity": ("int", ALL),
    "page.url": ("url", WEB),
    "page.referrer": ("url", WEB),
    "app.app_id": ("id", APP),
    "app.app_name": ("str", APP),
    "app.app_version": ("str", APP),
    "ad.callback": ("str", WEB_APP),
    "ad.campaign_id": ("id", WEB_APP),
    "ad.ad_id": ("id", WEB_APP),
    "ad.creative_id": ("id", WEB_APP),
    "ad.is_retargeting": ("bool", WEB_APP),
    "ad.attributed": ("bool", WEB_APP),
    "ad.attribution_type": ("str", WEB_APP),
    "ad.attribution_provider": ("str", WEB_APP),
    "ad.attribution_share": ("number", WEB_APP),
    "lead.lead_id": ("id", frozenset({"crm"})),
    "lead.lead_event_source": ("str", frozenset({"crm"})),
}

# A field each source cannot do without (besides event, event_time and, for offline, email or phone).
# Not page.url: TikTok's reference recommends it for web events but does not require it (README, Mappings).
REQUIRED_BY_SOURCE = {"app": "app.app_id", "crm": "lead.lead_id"}
# Longer strings are cut rather than rejected: TikTok documents no limits, these keep requests sane.
MAX_TEXT = 1000
MAX_URL = 2048

# Fields the runner reads itself rather than copying into the event body.
ENVELOPE_FIELDS = frozenset({"event_source_id"})
CONTENT_ITEM_KEYS = {path: path.rsplit(".", 1)[1] for path in FIELDS if ITEM_MARK in path}


def is_item_field(path: str) -> bool:
    return ITEM_MARK in path


def applies_to(path: str, event_source: str) -> bool:
    return event_source in FIELDS[path][1]


def get_path(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Set `user.email` style paths in a nested dict."""
    head, _, rest = path.partition(".")
    if not rest:
        body[head] = value
        return
    set_path(body.setdefault(head, {}), rest, value)


def request_body(event_source: str, event_source_id: str, events: list[dict[str, Any]],
                 test_event_code: str | None = None, partner_name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"event_source": event_source, "event_source_id": event_source_id}
    if partner_name:
        body["partner_name"] = partner_name
    if test_event_code:
        body["test_event_code"] = test_event_code
    body["data"] = events
    return body

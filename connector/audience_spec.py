"""TikTok Custom Audience facts: paths, limits and codes from ../shared/docs/tiktok-audiences-api.md."""

from __future__ import annotations

CREATE_PATH = "/v1.3/segment/audience/"
MAPPING_PATH = "/v1.3/segment/mapping/"
GET_PATH = "/v1.3/dmp/custom_audience/get/"
LIST_PATH = "/v1.3/dmp/custom_audience/list/"
METHODS = {CREATE_PATH: "POST", MAPPING_PATH: "POST", GET_PATH: "GET", LIST_PATH: "GET"}

MAPPING_ACTIONS = frozenset({"add", "delete"})
MAX_PEOPLE_PER_REQUEST = 10_000
MAX_NAME_LENGTH = 128
MAX_GET_IDS = 100
MAX_LIST_PAGE_SIZE = 100
PARTNER_TYPE = "Partner"  # created through /segment/audience/: the only kind mapping calls accept

CODE_PARTIAL_SUCCESS = 20001  # treat as OK
CODE_AUDIENCE_SERVICE_ERROR = 51003  # retry with backoff, bounded
OK_CODES = frozenset({0, CODE_PARTIAL_SUCCESS})
RETRY_CODES = frozenset({50000, 50002, CODE_AUDIENCE_SERVICE_ERROR})

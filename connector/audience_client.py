"""HTTP client for TikTok's Custom Audience endpoints (../shared/docs/tiktok-audiences-api.md): create (adopting
an audience of the same name first), mapping add/delete with bisection of refused requests, get and list.

The Events API client's guarantees hold here too: a deadline per attempt and none followed redirect
(connector.transport), bounded retries with full-jitter backoff (tiktok.RetryPolicy), every message redacted,
and a request rate shared by everything in the process that uses the same token (connector.ratelimit).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import requests

from . import tiktok_spec
from .audience_plan import MappingRequest
from .audience_spec import (
    CREATE_PATH, GET_PATH, LIST_PATH, MAPPING_PATH, MAX_GET_IDS, MAX_LIST_PAGE_SIZE, OK_CODES, RETRY_CODES,
)
from .errors import ConfigError, FatalAPIError, RetriableAPIError, TikTokError
from .ratelimit import RateLimiter, shared_limiter
from .redaction import redact, register
from .tiktok import RetryPolicy, Verification
from .transport import answer_of, pooled_session

log = logging.getLogger("connector.audiences")
DEFAULT_RATE = 10.0  # requests per second per token (the contract's decision)
MAX_LIST_PAGES = 1000  # 100,000 audiences: an advertiser with more is not looked through by name


class RefusedPeople(TikTokError):
    """40002/40000: TikTok refused the request for its content (a hash, a position, an audience id)."""


@dataclass(frozen=True)
class AudienceDetails:
    """One audience as `get` and `list` describe it. cover_num is TikTok's approximate matched size: it
    shows from about 1,000 people and updates 24-48 h after a change."""

    audience_id: str
    name: str | None
    cover_num: int | None
    is_valid: bool | None
    type: str | None
    expired_time: str | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> AudienceDetails:
        cover = data.get("cover_num")
        return cls(str(data.get("audience_id")), data.get("name"), int(cover) if cover is not None else None,
                   data.get("is_valid"), data.get("type"), data.get("expired_time"))


@dataclass(frozen=True)
class Refusal:
    """A person (a row of a mapping request) TikTok refuses on its own, with TikTok's message (redacted)."""

    index: int
    message: str


class AudienceClient:
    def __init__(self, base_url: str, access_token: str, *, timeout: float = 30.0,
                 retry: RetryPolicy = RetryPolicy(), rate: float = DEFAULT_RATE,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 seed: int | None = None, limiter: RateLimiter | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = access_token
        register(access_token)
        self.timeout, self.retry = timeout, retry
        try:
            self.session = session or pooled_session(self.base_url + MAPPING_PATH, 1)
        except ValueError:
            raise ConfigError("tiktok.base_url", f"{base_url!r} is not a URL",
                              f"e.g. {tiktok_spec.DEFAULT_BASE_URL}; TIKTOK_API_BASE_URL, when set, wins") from None
        self.limiter = limiter or shared_limiter(self.base_url, access_token, rate)
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.retries = 0  # retried attempts, for the run report
        self.requests = 0  # answered mapping requests (bisection included)

    def __repr__(self) -> str:  # never show the token
        return f"AudienceClient(base_url={self.base_url!r})"

    # ------------------------------------------------------------ the audience
    def find(self, advertiser_id: str, name: str) -> list[AudienceDetails]:
        """The advertiser's audiences named exactly `name` (the list endpoint, every page)."""
        found: list[AudienceDetails] = []
        for page in range(1, MAX_LIST_PAGES + 1):
            data = self._call("GET", LIST_PATH, params={"advertiser_id": advertiser_id, "page": str(page),
                                                        "page_size": str(MAX_LIST_PAGE_SIZE)})
            items = data.get("list") or []
            found += [AudienceDetails.of(item) for item in items if item.get("name") == name]
            total_pages = (data.get("page_info") or {}).get("total_page") or 0
            if not items or page >= int(total_pages):
                break
        return found

    def create(self, advertiser_id: str, name: str) -> str:
        """Create the audience, or adopt the one audience of that name: TikTok allows duplicate names, so a
        run that died after creating it (or a create whose answer was lost) must not make a second one.
        Several of that name: ConfigError (exit 2), the user names the one to use."""
        def existing() -> str | None:
            matches = self.find(advertiser_id, name)
            if len(matches) > 1:
                ids = ", ".join(m.audience_id for m in matches[:5])
                raise ConfigError(f"audience_name {name!r}", f"advertiser {advertiser_id} has {len(matches)} "
                                  f"audiences of this name ({ids})", "set audience_id to the one to sync")
            return matches[0].audience_id if matches else None

        found = existing()
        if found:
            return found
        body = {"advertiser_id": advertiser_id, "action": "create", "custom_audience_name": name}
        data = self._call("POST", CREATE_PATH, body, before_retry=existing)
        audience_id = data.get("audience_id")
        if not audience_id:
            raise FatalAPIError("TikTok created the audience but sent no audience_id back: run again (the "
                                "audience is then found by its name)")
        return str(audience_id)

    def get(self, advertiser_id: str, audience_ids: Sequence[str]) -> list[AudienceDetails]:
        """Size and state of up to 100 audiences (cover_num: TikTok's approximate matched size)."""
        if not 1 <= len(audience_ids) <= MAX_GET_IDS:
            raise ValueError(f"get takes 1 to {MAX_GET_IDS} audience ids")
        data = self._call("GET", GET_PATH, params={"advertiser_id": advertiser_id,
                                                   "custom_audience_ids": json.dumps(list(audience_ids))})
        return [AudienceDetails.of(item.get("audience_details") or {}) for item in data.get("list") or []]

    def verify(self, advertiser_id: str) -> Verification:
        """Ask TikTok whether the token may manage this advertiser's audiences (one list call, nothing
        changed): for `check`."""
        try:
            self._call("GET", LIST_PATH, params={"advertiser_id": advertiser_id, "page": "1", "page_size": "1"},
                       attempts=1)
        except FatalAPIError as exc:
            code = exc.code
            if code in tiktok_spec.AUTH_CODES:
                return Verification(False, f"the audience access token was refused (code {code})")
            if code in tiktok_spec.PERMISSION_CODES:
                return Verification(False, f"the audience access token has no permission for advertiser "
                                           f"{advertiser_id} (code {code})")
            return Verification(False, str(exc))
        except RefusedPeople as exc:
            return Verification(None, f"TikTok refused the check request: {exc}")
        except TikTokError as exc:
            return Verification(None, f"could not reach TikTok at {self.base_url} ({exc})")
        return Verification(True, f"audience access token accepted for advertiser {advertiser_id}")

    # ------------------------------------------------------------ members
    def mapping(self, request: MappingRequest, advertiser_id: str, audience_id: str) -> None:
        """Send one add or delete request; returns once TikTok acknowledged it (0 or 20001)."""
        self._call("POST", MAPPING_PATH, request.body(advertiser_id, audience_id))
        with self._lock:
            self.requests += 1

    def mapping_bisected(self, request: MappingRequest, advertiser_id: str, audience_id: str) -> list[Refusal]:
        """Send the request; when TikTok refuses it for its content (40002/40000), send each half again until
        the people it refuses on their own are found. Returns those (row indexes of `request.rows`); every
        other row has been acknowledged."""
        refused: list[Refusal] = []
        pending = [(0, request.rows)]
        while pending:
            start, rows = pending.pop()
            try:
                self.mapping(MappingRequest(request.action, request.id_schema, rows), advertiser_id, audience_id)
            except RefusedPeople as exc:
                if len(rows) == 1:
                    refused.append(Refusal(start, str(exc)))
                    continue
                middle = len(rows) // 2
                pending += [(start + middle, rows[middle:]), (start, rows[:middle])]
        return sorted(refused, key=lambda r: r.index)

    # ------------------------------------------------------------ one call, with retries
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              params: dict[str, str] | None = None, attempts: int | None = None,
              before_retry: Callable[[], str | None] | None = None) -> dict[str, Any]:
        """One call's attempts: the answer's `data` on 0/20001; RefusedPeople, FatalAPIError, or
        RetriableAPIError once retries ran out. `before_retry` may answer instead of a retry (a create
        whose answer was lost: the audience may exist)."""
        url = self.base_url + path
        data = orjson.dumps(body) if body is not None else None
        max_attempts = attempts or self.retry.max_attempts
        started = time.monotonic()
        ends = started + self.retry.max_elapsed
        problem, attempt = "", 0
        while True:
            seconds = self.timeout if not attempt else min(self.timeout, ends - time.monotonic())
            if seconds <= 0:
                break
            if attempt:
                with self._lock:
                    self.retries += 1
                if before_retry is not None and (found := before_retry()):
                    return {"audience_id": found}
            attempt += 1
            self.limiter.acquire()
            problem, throttled, answer = self._attempt(method, url, data, params, seconds)
            if answer is not None:
                self.limiter.accepted()
                return answer
            if throttled:
                self.limiter.throttled()
            with self._lock:
                delay = self.retry.delay(attempt - 1, self._rng)
            if attempt >= max_attempts or time.monotonic() + delay >= ends:
                break
            log.warning("TikTok audiences: %s; retrying in %.1fs (attempt %d of %d)", problem, delay, attempt + 1,
                        max_attempts)
            self._sleep(delay)
        raise RetriableAPIError(
            f"TikTok did not answer {method} {path} after {attempt} attempt{'s' if attempt != 1 else ''} over "
            f"{time.monotonic() - started:.1f}s; last problem: {problem}. Membership stays at the last "
            "acknowledged request: run again later")

    def _attempt(self, method: str, url: str, data: bytes | None, params: dict[str, str] | None,
                 seconds: float) -> tuple[str, bool, dict[str, Any] | None]:
        """(problem, throttled, data): data on success; raises for answers retrying cannot change."""
        headers = {"Access-Token": self._token, "Content-Type": "application/json"}
        problem, answered = answer_of(self.session, method, url, data, headers, seconds,
                                      "tiktok.audience_access_token", params)
        if answered is None:
            return problem, False, None
        code, answer = answered
        if code in OK_CODES:
            return "", False, answer.get("data") or {}
        message = redact(str(answer.get("message", "")))  # TikTok may quote the token back
        if code in tiktok_spec.THROTTLE_CODES:
            return f"throttled (code {code})", True, None
        if code in RETRY_CODES or code in tiktok_spec.SERVER_ERROR_CODES:
            return f"server error (code {code}: {message})", False, None
        if code in tiktok_spec.PARAMETER_ERROR_CODES:
            raise RefusedPeople(f"code {code}: {message}", code)
        if code in tiktok_spec.AUTH_CODES:
            raise FatalAPIError(f"TikTok refused the audience access token (code {code}: {message}); check "
                                "tiktok.audience_access_token (a Marketing API token with Audience Management "
                                "scope, not the Events API token)", code)
        if code in tiktok_spec.PERMISSION_CODES:
            raise FatalAPIError(f"TikTok says the audience access token has no permission (code {code}: "
                                f"{message}); check advertiser_id and that the advertiser authorised the app", code)
        raise FatalAPIError(f"TikTok answered code {code}: {message}", code)


def audience_client(base_url: str, token: str, settings: Any) -> AudienceClient:
    """The client a run uses, from the project's `tiktok` settings."""
    return AudienceClient(base_url, token, timeout=settings.timeout_seconds,
                          retry=RetryPolicy(max_attempts=settings.max_attempts, max_elapsed=settings.max_retry_seconds),
                          rate=settings.audience_max_requests_per_second)

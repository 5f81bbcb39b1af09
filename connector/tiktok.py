"""HTTP client for POST /v1.3/event/track/: TikTok's `code` decides, with bounded retries and backoff."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import requests

from . import tiktok_spec as spec
from .payload import request_body
from .ratelimit import DEFAULT_REQUESTS_PER_SECOND, shared_limiter
from .errors import ConfigError, FatalAPIError, RetriableAPIError, TikTokError
from .redaction import redact, register
from .transport import AttemptFailed, answer_of, is_redirect, pooled_session, post, redirect_target

log = logging.getLogger("connector.tiktok")
_EVENT_INDEX = re.compile(r"\bdata\.(\d+)\b")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_elapsed: float = 300.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2^attempt)], so senders do not retry in lockstep."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))


class InvalidEvents(TikTokError):
    """40002/40000: the request was refused because of its content; `index` names the event when TikTok does."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        match = _EVENT_INDEX.search(message)
        self.index = int(match.group(1)) if match else None


@dataclass(frozen=True)
class TrackResult:
    code: int
    message: str
    request_id: str
    attempts: int


class TikTokClient:
    def __init__(self, base_url: str, access_token: str, *, timeout: float = 30.0,
                 retry: RetryPolicy = RetryPolicy(), session: requests.Session | None = None,
                 partner_name: str | None = None, sleep: Callable[[float], None] = time.sleep,
                 seed: int | None = None, connections: int = 16,
                 max_requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND) -> None:
        self.url = base_url.rstrip("/") + spec.TRACK_PATH
        self._token = access_token
        register(access_token)  # for a client made without load_project
        self.timeout = timeout
        self.retry = retry
        try:
            self.session = session or pooled_session(self.url, connections)
        except ValueError:  # the URL cannot even be parsed for its proxy settings
            raise ConfigError("tiktok.base_url", f"{base_url!r} is not a URL",
                              f"e.g. {spec.DEFAULT_BASE_URL}; TIKTOK_API_BASE_URL, when set, wins") from None
        self.partner_name = partner_name
        # Every attempt of every sender takes a slot from the token's limiter, shared in the process.
        self.limiter = shared_limiter(base_url, access_token, max_requests_per_second)
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.retries = 0  # total retried attempts, for the run report (senders run in threads)

    def __repr__(self) -> str:  # never show the token
        return f"TikTokClient(url={self.url!r})"

    def track(self, event_source: str, event_source_id: str, events: list[dict[str, Any]],
              test_event_code: str | None = None) -> TrackResult:
        """Send one batch. Returns on code 0/20001; raises InvalidEvents, FatalAPIError or RetriableAPIError.

        The first attempt has `timeout` seconds; retries (and the pauses before them) only start and run
        while `retry.max_elapsed` seconds from the start allow, so a batch ends within the larger of the two."""
        data = orjson.dumps(request_body(event_source, event_source_id, events, test_event_code, self.partner_name))
        started = time.monotonic()
        ends = started + self.retry.max_elapsed
        last_problem = ""
        attempts = 0
        while True:
            generation = self.limiter.acquire(deadline=ends if attempts else None)
            seconds = self.timeout if not attempts else min(self.timeout, ends - time.monotonic())
            if generation is None or seconds <= 0:
                break
            if attempts:
                with self._lock:
                    self.retries += 1
            attempts += 1
            problem, throttled, result = self._attempt(data, attempts, seconds)
            if result is not None:
                self.limiter.accepted()
                return result
            last_problem = problem
            if throttled:  # the limiter slows every sender of the token down: its next slot is the pause
                self.limiter.throttled(generation)
            if attempts >= self.retry.max_attempts:
                break
            if throttled:
                log.warning("TikTok: %s; retrying at %.1f requests/s (attempt %d of %d)", problem,
                            self.limiter.rate, attempts + 1, self.retry.max_attempts)
                continue
            with self._lock:
                delay = self.retry.delay(attempts - 1, self._rng)
            if time.monotonic() + delay >= ends:
                break
            log.warning("TikTok: %s; retrying in %.1fs (attempt %d of %d)", problem, delay, attempts + 1,
                        self.retry.max_attempts)
            self._sleep(delay)
        raise RetriableAPIError(
            f"TikTok did not accept the batch after {attempts} attempt{'s' if attempts != 1 else ''} over "
            f"{time.monotonic() - started:.1f}s; last problem: {last_problem}. The watermark stays at the last "
            "acknowledged batch: run the sync again later")

    def _attempt(self, data: bytes, attempt: int, seconds: float) -> tuple[str, bool, TrackResult | None]:
        headers = {"Access-Token": self._token, "Content-Type": "application/json"}
        problem, answered = answer_of(self.session, "POST", self.url, data, headers, seconds, "tiktok.access_token")
        if answered is None:
            return problem, False, None
        code, answer = answered
        if code in spec.OK_CODES:
            return "", False, TrackResult(code, str(answer.get("message", "")), str(answer.get("request_id", "")),
                                          attempt)
        message = redact(str(answer.get("message", "")))  # TikTok may quote the token back
        if code in spec.THROTTLE_CODES:
            return f"throttled (code {code})", True, None
        if code in spec.SERVER_ERROR_CODES:
            return f"server error (code {code}: {message})", False, None
        if code in spec.PARAMETER_ERROR_CODES:
            raise InvalidEvents(message, code)
        if code in spec.AUTH_CODES:
            raise FatalAPIError(f"TikTok refused the access token (code {code}: {message}); "
                                "check tiktok.access_token or create a new token in TikTok Events Manager", code)
        if code in spec.PERMISSION_CODES:
            raise FatalAPIError(f"TikTok says the token has no permission for this event source (code {code}: "
                                f"{message}); check event_source_id and the token's scope", code)
        raise FatalAPIError(f"TikTok answered code {code}: {message}", code)


@dataclass(frozen=True)
class Verification:
    verified: bool | None  # None: could not tell
    message: str


def verify_access(client: TikTokClient, event_source: str, event_source_id: str) -> Verification:
    """Ask TikTok about the token and event source id without sending an event: a request with an empty
    `data` array is refused as a parameter error only once the token and the source passed."""
    body = orjson.dumps(request_body(event_source, event_source_id, []))
    headers = {"Access-Token": client._token, "Content-Type": "application/json"}
    client.limiter.acquire()
    try:
        response = post(client.session, client.url, body, headers, client.timeout)
    except AttemptFailed as exc:
        if not exc.retriable:
            return Verification(False, f"{exc.problem}: check tiktok.access_token for spaces, line breaks or "
                                       "non-ASCII characters, and tiktok.base_url")
        return Verification(None, f"could not reach TikTok at {client.url} ({exc.problem})")
    if is_redirect(response):
        return Verification(False, f"TikTok answered HTTP {response.status_code}, redirecting to "
                                   f"{redirect_target(response)}; redirects are not followed (the token goes "
                                   "nowhere else): check tiktok.base_url")
    try:
        code = int(orjson.loads(response.content)["code"]) if response.status_code == 200 else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return Verification(None, f"TikTok at {client.url} answered without a TikTok JSON answer")
    if code is None:
        return Verification(False, f"TikTok answered HTTP {response.status_code}: check tiktok.base_url")
    if code in spec.AUTH_CODES:
        return Verification(False, f"the access token was refused (code {code})")
    if code in spec.PERMISSION_CODES:
        return Verification(False, f"the token has no permission for event source id {event_source_id} "
                                   f"(code {code})")
    if code in spec.PARAMETER_ERROR_CODES or code in spec.OK_CODES:
        return Verification(True, f"token and event source id {event_source_id} accepted "
                                  "(probed with an empty batch; no event was sent)")
    return Verification(None, f"TikTok answered code {code}; the token could not be verified")

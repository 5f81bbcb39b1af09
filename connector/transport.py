"""HTTP attempts for TikTok and the alert webhook: a total deadline per attempt, no redirects, one error type.

`requests`' timeout bounds each socket operation, so a server that sends its answer one byte at a time
never times out. Here every attempt has a deadline for connect + request + the whole answer: a watchdog
thread shuts the attempt's socket down when it passes (that wakes a blocked recv or send at once).
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .redaction import redact


class AttemptFailed(Exception):
    """One attempt got no usable answer. `problem` names no URL credentials and no header value;
    `retriable` is False when the request itself cannot be sent (a header or URL that is not valid)."""

    def __init__(self, problem: str, retriable: bool = True) -> None:
        super().__init__(problem)
        self.problem, self.retriable = problem, retriable


class _Attempt:
    __slots__ = ("deadline", "conn", "sock", "expired", "done")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        self.sock: socket.socket | None = None
        self.expired = self.done = False


class _Watchdog:
    """One daemon thread for the process, asleep until the earliest deadline of the attempts in progress."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._order = itertools.count()
        self._local = threading.local()
        self._thread: threading.Thread | None = None

    @contextmanager
    def attempt(self, seconds: float) -> Iterator[_Attempt]:
        attempt = _Attempt(time.monotonic() + seconds)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if self._heap[0][2] is attempt:
                self._cond.notify()
        self._local.attempt = attempt
        try:
            yield attempt
        finally:
            self._local.attempt = None
            with self._cond:
                attempt.done, attempt.conn, attempt.sock = True, None, None

    def claim(self, conn: HTTPConnection, sock: socket.socket | None) -> None:
        """The connection (and its socket, once made) now carries this thread's attempt, if any."""
        attempt = getattr(self._local, "attempt", None)
        if attempt is None:
            return
        with self._cond:
            previous = getattr(conn, "_deadline_attempt", None)
            if previous is not None and previous is not attempt:
                previous.conn = previous.sock = None  # a kept-alive connection, reused: no longer the old one's
            conn._deadline_attempt = attempt  # type: ignore[attr-defined]
            attempt.conn, attempt.sock = conn, sock or attempt.sock
            if attempt.expired:
                _cut(conn.sock or attempt.sock)

    def _run(self) -> None:
        with self._cond:
            while True:
                heap = self._heap
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    self._cond.wait()
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                attempt = heapq.heappop(heap)[2]
                attempt.expired = True
                if attempt.conn is not None:
                    _cut(attempt.conn.sock or attempt.sock)


def _cut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, also for an SSLSocket (whose method would drop its SSL object).
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


_WATCHDOG = _Watchdog()


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _WATCHDOG.claim(self, sock)
        return sock

    def request(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def, override]
        _WATCHDOG.claim(self, self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """Pools whose connections tell the watchdog which socket an attempt uses."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # type: ignore[no-untyped-def]
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def pooled_session(url: str, connections: int = 1) -> requests.Session:
    """A session keeping one connection per sender alive (requests keeps 10), that reads proxy and CA
    settings from the environment once instead of on every request."""
    session = requests.Session()
    adapter = _Adapter(pool_connections=1, pool_maxsize=max(connections, 1))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify, session.cert = settings["verify"], settings["cert"]
    session.trust_env = False
    return session


def post(session: requests.Session, url: str, data: bytes, headers: Mapping[str, str],
         seconds: float) -> requests.Response:
    """POST once: connect, send and read the whole answer within `seconds`, or raise AttemptFailed.
    Redirects are answers (never followed: the next host would get the same headers)."""
    return send(session, "POST", url, data, headers, seconds)


def get(session: requests.Session, url: str, params: Mapping[str, str], headers: Mapping[str, str],
        seconds: float) -> requests.Response:
    """GET once, as `post` does: a deadline for the whole attempt, redirects not followed."""
    return send(session, "GET", url, None, headers, seconds, params)


def send(session: requests.Session, method: str, url: str, data: bytes | None, headers: Mapping[str, str],
         seconds: float, params: Mapping[str, str] | None = None) -> requests.Response:
    """One attempt of any method (see `post`)."""
    with _WATCHDOG.attempt(seconds) as attempt:
        try:
            response = session.request(method, url, data=data, params=params, headers=headers, timeout=seconds,
                                       allow_redirects=False)
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError,
                ValueError) as exc:
            # `from None`: these messages may quote a header value, the token among them.
            if attempt.expired:
                raise AttemptFailed(f"no complete answer within {_seconds(seconds)}s") from None
            if isinstance(exc, requests.Timeout):
                raise AttemptFailed(f"no answer within {_seconds(seconds)}s") from None
            if isinstance(exc, ValueError):  # requests' InvalidHeader/InvalidURL, http.client's checks, UnicodeError
                raise AttemptFailed(f"the request could not be built ({exc.__class__.__name__})", False) from None
            raise AttemptFailed(f"connection failed ({exc.__class__.__name__})") from None
        if attempt.expired:  # cut while reading: http.client takes an early EOF for the end of the headers
            raise AttemptFailed(f"no complete answer within {_seconds(seconds)}s")
        return response


def _seconds(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def is_redirect(response: requests.Response) -> bool:
    return 300 <= response.status_code < 400


def redirect_target(response: requests.Response) -> str:
    """Where a 3xx answer points, as scheme://host/path: no credentials, query or fragment."""
    location = response.headers.get("Location")
    if not location:
        return "(no Location header)"
    try:
        parts = urlsplit(urljoin(response.url or "", location))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a Location that is not a URL)"
    return redact(f"{parts.scheme}://{host}{port}{parts.path}")


def answer_of(session: requests.Session, method: str, url: str, data: bytes | None, headers: Mapping[str, str],
              seconds: float, token_key: str, params: Mapping[str, str] | None = None) -> tuple[str, Any]:
    """One attempt at a TikTok endpoint: ("", (code, answer)) for TikTok's JSON answer, or (problem, None) for
    a failure a retry may cure (a lost connection, a stall, HTTP 5xx, HTTP 200 without TikTok's JSON).
    Raises FatalAPIError for what a retry cannot change: a token the HTTP layer refuses (`token_key` names
    its setting), a redirect (never followed: the token goes nowhere else) and other HTTP statuses."""
    from .errors import FatalAPIError

    try:
        response = send(session, method, url, data, headers, seconds, params)
    except AttemptFailed as exc:
        if not exc.retriable:
            raise FatalAPIError(f"{exc.problem} for {method} {url}: check {token_key} for spaces, line breaks "
                                "or non-ASCII characters, and tiktok.base_url") from None
        return exc.problem, None
    if is_redirect(response):
        raise FatalAPIError(
            f"TikTok answered HTTP {response.status_code} for {method} {url}, redirecting to "
            f"{redirect_target(response)}; redirects are not followed, so the access token goes nowhere else: "
            "check tiktok.base_url (it should end in /open_api)", response.status_code)
    if response.status_code >= 500:
        return f"HTTP {response.status_code}", None
    if response.status_code != 200:
        raise FatalAPIError(f"TikTok answered HTTP {response.status_code} for {method} {url}: check "
                            "tiktok.base_url (it should end in /open_api)", response.status_code)
    try:
        answer = orjson.loads(response.content)
        return "", (int(answer["code"]), answer)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "HTTP 200 without a TikTok JSON answer", None

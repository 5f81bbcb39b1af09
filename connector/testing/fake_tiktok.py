"""A fake TikTok Events API 2.0 server on 127.0.0.1 for tests, benchmarks and the demo."""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import repeat
from socketserver import TCPServer
from typing import Any

from connector.audience_spec import METHODS as AUDIENCE_METHODS
from connector.testing.faults import THROTTLE_MESSAGE, Fault, Faults
from connector.testing.fake_rules import AUTH_MESSAGES, Rejected, fail, validate_body
from connector.tiktok_spec import (
    CODE_THROTTLED, CODE_TOKEN_EMPTY, CODE_TOKEN_INVALID, SERVER_ERROR_CODES,
    THROTTLE_CODES, TRACK_PATH,
)

try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # pragma: no cover - orjson is a project dependency
    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

API_PREFIX = "/open_api"
ADMIN_PREFIX = "/_fake/"
DEDUP_WINDOW_SECONDS = 48 * 3600



@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """One event of a request the fake answered with code 0."""

    event_source: str
    event_source_id: str
    event: dict[str, Any]
    test_event_code: str | None
    request_index: int  # RecordedRequest.index of the request that carried it


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One track request and how the fake answered it."""

    index: int  # arrival order, 0-based
    raw: bytes
    http_status: int | None  # None: dropped without a response
    code: int | None
    message: str
    event_count: int
    headers: dict[str, str]  # Access-Token redacted

    @property
    def body(self) -> dict[str, Any] | None:
        """The body parsed afresh (None unless a JSON object): bytes keep the GC out of benchmarks."""
        return _parse_object(self.raw)


def _parse_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = _loads(raw)
    except ValueError:
        return None
    return body if type(body) is dict else None


# ---------------------------------------------------------------- the fake

@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    payload: dict[str, Any]
    headers: Mapping[str, str]
    drip: float = 0.0  # > 0: sent one byte at a time, this many seconds apart


@dataclass(frozen=True, slots=True)
class _Batch:
    event_source: str
    event_source_id: str
    test_event_code: str | None
    request_index: int
    count: int
    # Kept as bytes and parsed on demand: millions of retained dicts would make every GC pass crawl.
    raw: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        return _loads(self.raw)["data"]


@dataclass(slots=True)
class _TokenTraffic:
    """One token's track requests against the fake's rate limit."""

    requests: int = 0
    throttled: int = 0  # answered 40100 because the token was over the rate limit
    most_in_one_second: int = 0  # the most requests (throttled ones too) that arrived within one second
    first: float | None = None  # when the first request arrived (rate clock)
    last: float | None = None
    arrivals: deque[float] = field(default_factory=deque)  # every arrival of the last second
    admitted: deque[float] = field(default_factory=deque)  # arrivals of the last second let through

    def as_dict(self) -> dict[str, float]:
        return {"requests": self.requests, "throttled": self.throttled, "most_in_one_second": self.most_in_one_second,
                "first_to_last_seconds": round(self.last - self.first, 3) if self.first is not None else 0.0}


def token_key(token: str) -> str:
    """How the fake names a token in its rate statistics: a digest, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


_COUNTERS = ("requests", "accepted_events", "test_events", "rejected_requests", "throttled",
             "server_errors", "dropped", "duplicates_within_48h", "duplicates_after_48h")


class FakeTikTok(Faults):
    """TikTok's track endpoint on a real local socket, with recording and faults on demand."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, access_token: str = "test-token",
                 latency: float = 0.0, known_event_source_ids: set[str] | None = None,
                 clock: Callable[[], float] = time.time, audience_access_token: str = "audience-token",
                 advertiser_ids: Iterable[str] | None = None, rate_limit: float | None = None,
                 rate_clock: Callable[[], float] = time.monotonic) -> None:
        """`rate_limit`: track requests per second per Access-Token (sliding window of one second, see
        set_rate_limit); None: no limit."""
        self._host, self._port, self._token = host, port, access_token
        self._initial_rate_limit = self.rate_limit = rate_limit
        self._rate_clock = rate_clock
        self._initial_latency = self.latency = latency
        self._known_ids = set(known_event_source_ids) if known_event_source_ids is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._serial = threading.Lock()  # one track request parsed and validated at a time
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._clear()
        from connector.testing.fake_audiences import AudienceBackend  # it builds on this module's faults
        self.audiences = AudienceBackend(audience_access_token, advertiser_ids, clock=clock,
                                         wait=lambda seconds: self._stopping.wait(seconds))

    def _clear(self) -> None:
        self._next_index = 0
        self._requests: list[RecordedRequest] = []
        self._accepted: list[_Batch] = []
        self._tests: list[_Batch] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)
        # (event_source_id, event) -> event_id -> first seen; str keys and float values keep the GC out
        self._seen: dict[tuple[str, str], dict[str, float]] = {}
        self._clear_faults()
        self._reject_ids: dict[str, str] = {}
        self._traffic: dict[str, _TokenTraffic] = {}  # by token_key

    # lifecycle
    def start(self) -> FakeTikTok:
        """Bind and serve in a daemon thread."""
        if self._server is None:
            self._stopping = threading.Event()
            self._server = _Server((self._host, self._port), self)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-tiktok", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections (sleeping stalls wake up)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeTikTok:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeTikTok is not started: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{API_PREFIX}"

    # records
    def accepted(self) -> list[AcceptedEvent]:
        with self._lock:
            batches = list(self._accepted)
        return _flatten(batches)

    def accepted_event_ids(self) -> list[str]:
        """event_id of every accepted event that has one, in arrival order, duplicates included."""
        return [e.event["event_id"] for e in self.accepted() if "event_id" in e.event]

    def test_events(self) -> list[AcceptedEvent]:
        with self._lock:
            batches = list(self._tests)
        return _flatten(batches)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return sorted(self._requests, key=lambda r: r.index)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def rate_stats(self) -> dict[str, dict[str, float]]:
        """Per token (by token_key): requests, those throttled by the rate limit, the most requests that
        arrived within one second (sliding), and the seconds from the first request to the last, whether or
        not a limit is set."""
        with self._lock:
            return {key: traffic.as_dict() for key, traffic in self._traffic.items()}

    def reset(self) -> None:
        """Forget records, counters, faults, dedup memory; latency and the rate limit go back to the
        constructor's."""
        with self._lock:
            self._clear()
            self.latency = self._initial_latency
            self.rate_limit = self._initial_rate_limit
        self.audiences.reset()

    # faults beyond those of Faults
    def redirect_next(self, location: str, n: int = 1, http_status: int = 307) -> None:
        """Answer the next `n` track requests with a redirect to `location` (e.g. a Recorder's url), as a
        proxy or a moved endpoint would; a client that follows it hands its Access-Token to that host."""
        if not 300 <= http_status < 400:
            raise ValueError(f"http_status {http_status} is not a redirect (3xx)")
        self._queue(n, Fault("redirect", 0, http_status, "Moved", location=location))

    def drip_next(self, n: int = 1, interval: float = 0.2) -> None:
        """Send the next `n` answers (status line, headers, body) one byte every `interval` seconds: every
        read gets a byte in time, so only a deadline for the whole answer ends the wait."""
        self._queue(n, Fault("drip", seconds=interval))

    def quote_token_next(self, n: int = 1, code: int = CODE_TOKEN_INVALID,
                         message: str = "token {token} has been revoked") -> None:
        """Answer the next `n` requests with `code` and a message quoting the Access-Token it received
        (`{token}` in `message`), as some APIs do: the client must not print, store or forward it."""
        self._queue(n, Fault("quote_token", code, 200, message))

    def reject_event_ids(self, ids: Iterable[str], message: str = "Not a valid value") -> None:
        """Requests carrying any of these event_ids fail whole with 40002, until reset()."""
        with self._lock:
            self._reject_ids.update(dict.fromkeys(ids, message))

    def set_rate_limit(self, per_second: float | None) -> None:
        """Let each Access-Token through at most `per_second` track requests in any sliding window of one
        second (requests let through count; throttled ones do not); answer the others code 40100 at HTTP
        200, after the usual latency. None (or 0) lifts the limit."""
        if per_second is not None and per_second < 0:
            raise ValueError("rate_limit must be a number of requests per second, or null for none")
        with self._lock:
            self.rate_limit = float(per_second) if per_second else None

    def _over_rate_limit(self, token: str) -> bool:
        """Count an arrival (under self._lock); True when the token is over the limit."""
        now = self._rate_clock()
        traffic = self._traffic.setdefault(token_key(token), _TokenTraffic())
        traffic.requests += 1
        traffic.first = now if traffic.first is None else traffic.first
        traffic.last = now
        for times in (traffic.arrivals, traffic.admitted):
            while times and times[0] <= now - 1.0:
                times.popleft()
        traffic.arrivals.append(now)
        traffic.most_in_one_second = max(traffic.most_in_one_second, len(traffic.arrivals))
        if self.rate_limit is not None and len(traffic.admitted) + 1 > self.rate_limit:
            traffic.throttled += 1
            return True
        traffic.admitted.append(now)
        return False

    # the track endpoint
    def _handle_track(self, headers: Mapping[str, str], raw: bytes) -> _Reply | None:
        """Answer one track request, or None to drop the connection."""
        with self._lock:
            index, self._next_index = self._next_index, self._next_index + 1
            if self._over_rate_limit(headers.get("Access-Token") or ""):
                fault: Fault | None = Fault("throttle", CODE_THROTTLED, 200, THROTTLE_MESSAGE)
            else:
                fault = self._take_fault()
            auth_error = self._auth_error
        drip = 0.0
        if fault is not None and fault.kind == "drip":
            fault, drip = None, fault.seconds  # the usual answer, sent slowly
        self._stopping.wait(self.latency + (fault.seconds if fault is not None else 0.0))
        # Python runs one thread at a time: requests validated concurrently would share that core and all be
        # answered late, together. One at a time, each is answered after its own work, as by TikTok's servers.
        with self._serial:
            body = _parse_object(raw)
            if fault is not None and fault.kind == "drop":
                self._finish(index, raw, body, headers, None, None, "dropped: connection reset")
                return None
            if fault is not None and fault.kind == "redirect":
                self._finish(index, raw, body, headers, fault.http_status, None, f"redirected to {fault.location}")
                return _Reply(fault.http_status, {"code": fault.http_status, "message": fault.message},
                              {"Location": fault.location})
            if fault is not None and fault.kind == "quote_token":
                status, code, batch = 200, fault.code, None
                message = fault.message.replace("{token}", headers.get("Access-Token") or "")
            elif fault is not None:
                status, code, message, batch = fault.http_status, fault.code, fault.message, None
            else:
                status = 200
                try:
                    batch = self._validate(index, headers, raw, body, auth_error)
                    code, message = 0, "OK"
                except Rejected as e:
                    code, message, batch = e.code, e.message, None
            self._finish(index, raw, body, headers, status, code, message, batch)
        payload: dict[str, Any] = {"code": code, "message": message, "request_id": uuid.uuid4().hex}
        if code == 0:
            payload["data"] = {}
        return _Reply(status, payload, {}, drip)

    def _validate(self, index: int, headers: Mapping[str, str], raw: bytes, body: dict[str, Any] | None,
                  auth_error: int | None) -> _Batch:
        if auth_error is not None:
            raise Rejected(AUTH_MESSAGES.get(auth_error, "Authentication failed"), auth_error)
        token = headers.get("Access-Token")
        if not token:
            raise Rejected(AUTH_MESSAGES[CODE_TOKEN_EMPTY], CODE_TOKEN_EMPTY)
        if token != self._token:
            raise Rejected(AUTH_MESSAGES[CODE_TOKEN_INVALID], CODE_TOKEN_INVALID)
        if body is None:
            raise Rejected("Request body is not a JSON object")
        source, source_id, data = validate_body(body, self._clock(), self._known_ids)
        if self._reject_ids:
            for i, event in enumerate(data):
                message = self._reject_ids.get(event.get("event_id"))  # type: ignore[arg-type]
                if message is not None:
                    fail(f"data.{i}.event_id", message)
        return _Batch(source, source_id, body.get("test_event_code"), index, len(data), raw)

    def _finish(self, index: int, raw: bytes, body: dict[str, Any] | None, headers: Mapping[str, str],
                status: int | None, code: int | None, message: str, batch: _Batch | None = None) -> None:
        data = body.get("data") if body is not None else None
        redacted = {k: ("<redacted>" if k.lower() == "access-token" else v) for k, v in headers.items()}
        record = RecordedRequest(index, raw, status, code, message, len(data) if type(data) is list else 0,
                                 redacted)
        with self._lock:
            self._requests.append(record)
            c = self._counters
            c["requests"] += 1
            if code != 0:
                c[_outcome_counter(status, code)] += 1
            if batch is not None and batch.test_event_code is not None:
                self._tests.append(batch)
                c["test_events"] += batch.count
            elif batch is not None:
                self._accepted.append(batch)
                c["accepted_events"] += batch.count
                self._count_duplicates(batch.event_source_id, data)  # type: ignore[arg-type]

    def _count_duplicates(self, source_id: str, events: list[dict[str, Any]]) -> None:
        # TikTok keeps the first event per (source id, event, event_id) for 48 h; after that it is new.
        now, c = self._clock(), self._counters
        for name, ids in _ids_by_event_name(events).items():
            seen = self._seen.setdefault((source_id, name), {})
            if len(set(ids)) == len(ids) and seen.keys().isdisjoint(ids):  # the usual batch: all new
                seen.update(dict.fromkeys(ids, now))
                continue
            for event_id in ids:
                first = seen.get(event_id)
                if first is None:
                    seen[event_id] = now
                elif now - first < DEDUP_WINDOW_SECONDS:
                    c["duplicates_within_48h"] += 1
                else:
                    c["duplicates_after_48h"] += 1
                    seen[event_id] = now

    # admin surface, for a server in another process
    def _admin(self, method: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        if method == "GET" and name == "accepted":
            return 200, {"events": [_event_json(e) for e in self.accepted()],
                         "test_events": [_event_json(e) for e in self.test_events()], "stats": self.stats}
        if name == "audiences" or name.startswith("audiences/"):
            return self.audiences.admin(method, name[len("audiences/"):], body)
        if method == "GET" and name == "stats":
            return 200, self.stats
        if method == "GET" and name == "rate":
            return 200, {"rate_limit": self.rate_limit, "window": "sliding, 1 s", "tokens": self.rate_stats()}
        if method == "POST" and name == "reset":
            self.reset()
            return 200, {"ok": True}
        if method == "POST" and name == "faults":
            try:
                self.apply_faults(body)
            except (TypeError, ValueError, AttributeError) as e:
                return 400, {"ok": False, "error": f"bad faults body: {e}"}
            return 200, {"ok": True}
        return 404, {"ok": False, "error": f"no admin route {method} {ADMIN_PREFIX}{name}"}

    def fault_actions(self) -> dict[str, Callable[[Any], None]]:
        return {
            **super().fault_actions(),
            "redirect_next": lambda a: self.redirect_next(**a),
            "drip_next": lambda a: self.drip_next(**a),
            "quote_token_next": lambda a: self.quote_token_next(**a),
            "reject_event_ids": lambda a: self.reject_event_ids(**a),
            "rate_limit": self.set_rate_limit,
        }


def _flatten(batches: list[_Batch]) -> list[AcceptedEvent]:
    return [AcceptedEvent(b.event_source, b.event_source_id, e, b.test_event_code, b.request_index)
            for b in batches for e in b.events]


def _ids_by_event_name(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The event_ids of a validated batch by event name, in order (events without an id are left out)."""
    names = {event["event"] for event in events}
    if len(names) == 1:
        return {names.pop(): [i for i in map(dict.get, events, repeat("event_id")) if i is not None]}
    by_name: dict[str, list[str]] = {}
    for event in events:
        if "event_id" in event:
            by_name.setdefault(event["event"], []).append(event["event_id"])
    return by_name


def _event_json(e: AcceptedEvent) -> dict[str, Any]:
    return {"event_source": e.event_source, "event_source_id": e.event_source_id, "event": e.event,
            "test_event_code": e.test_event_code, "request_index": e.request_index}


def _outcome_counter(status: int | None, code: int | None) -> str:
    if status is not None and 300 <= status < 400:
        return "rejected_requests"
    if code is None:
        return "dropped"
    if code in THROTTLE_CODES:
        return "throttled"
    if code in SERVER_ERROR_CODES or (status or 0) >= 500:
        return "server_errors"
    return "rejected_requests"


# ---------------------------------------------------------------- HTTP plumbing

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeTikTok) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # HTTPServer's version does a reverse DNS lookup we do not need
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # Without this, Nagle + delayed ACK add ~40 ms to every keep-alive response.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._open_lock:
            self._open.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            socks = list(self._open)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client gave up (timeout, drop): nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body leave in one send
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._route("POST")

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def _route(self, method: str) -> None:
        raw = self._read_body()
        path = self.path.split("?", 1)[0]
        fake = self.server.fake
        if path.startswith(ADMIN_PREFIX):
            body = None
            if raw:
                try:
                    body = _loads(raw)
                except ValueError:
                    return self._send(400, {"ok": False, "error": "admin body is not valid JSON"})
            return self._send(*fake._admin(method, path[len(ADMIN_PREFIX):], body or {}))
        if path.startswith(API_PREFIX) and path[len(API_PREFIX):] in AUDIENCE_METHODS:
            reply = fake.audiences.handle(method, path[len(API_PREFIX):], self.path.partition("?")[2], self.headers, raw)
            return self._reset_connection() if reply is None else self._send(*reply)
        if path != API_PREFIX + TRACK_PATH:
            return self._send(404, {"code": 404, "message": f"Not found: {path} (the track path is "
                                                            f"{API_PREFIX}{TRACK_PATH}, with the slash)"})
        if method != "POST":
            return self._send(405, {"code": 405, "message": f"Method {method} not allowed; use POST"},
                              {"Allow": "POST"})
        reply = fake._handle_track(self.headers, raw)
        if reply is None:
            self._reset_connection()
        elif reply.drip:
            self._drip(reply)
        else:
            self._send(reply.status, reply.payload, reply.headers)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return b""
        # One blocking recv(MSG_WAITALL) instead of many small reads: every re-acquire of the GIL
        # after a read can wait a whole switch interval behind a validating thread.
        buf = bytearray(length)
        view = memoryview(buf)
        got = self.rfile.readinto1(view)  # whatever came in with the headers
        while got < length:
            n = self.connection.recv_into(view[got:], length - got, socket.MSG_WAITALL)
            if n == 0:
                raise ConnectionResetError("client closed the connection mid-body")
            got += n
        return bytes(buf)

    def _send(self, status: int, payload: Any, extra: Mapping[str, str] | None = None) -> None:
        data = _dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _drip(self, reply: _Reply) -> None:
        data = _dumps(reply.payload)
        head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}",
                "Content-Type: application/json", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        answer = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
        stopping = self.server.fake._stopping
        for i in range(len(answer)):
            self.connection.sendall(answer[i:i + 1])  # a client that gave up makes this raise: handled quietly
            if stopping.wait(reply.drip):
                return

    def _reset_connection(self) -> None:
        self.close_connection = True
        # Linger 0 makes the close an RST, like a load balancer dying mid-request.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, after printing `listening on <base_url>`."""
    parser = argparse.ArgumentParser(prog="python -m connector.testing.fake_tiktok", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default="test-token", help="the Access-Token to accept")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each track answer")
    parser.add_argument("--rate-limit", type=float, default=None, metavar="N",
                        help="track requests per second per Access-Token (sliding 1-s window); beyond it the "
                             "answer is code 40100 (default: no limit)")
    parser.add_argument("--chaos-rate", type=float, default=0.0, help="fraction of requests to fault")
    parser.add_argument("--seed", type=int, default=0, help="chaos random seed")
    parser.add_argument("--event-source-id", action="append", dest="event_source_ids",
                        help="allowed event_source_id (repeatable; default: any)")
    parser.add_argument("--audience-token", default="audience-token", help="the Marketing API Access-Token to accept")
    parser.add_argument("--advertiser-id", action="append", dest="advertiser_ids",
                        help="known advertiser_id for the audience endpoints (repeatable; default: any)")
    parser.add_argument("--no-bodies", action="store_true",
                        help="keep no request bodies of the audience endpoints (benchmarks of millions of people)")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    known = set(args.event_source_ids) if args.event_source_ids else None
    with FakeTikTok(args.host, args.port, args.token, args.latency, known, audience_access_token=args.audience_token,
                    advertiser_ids=args.advertiser_ids, rate_limit=args.rate_limit) as fake:
        fake.set_chaos(args.chaos_rate, args.seed)
        fake.audiences.keep_bodies = not args.no_bodies
        print(f"listening on {fake.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def serve() -> None:
    """`python -m connector.testing.fake_tiktok`: a process of its own, so it may tune the garbage collector as
    the connector's command does. A track body parses into thousands of dicts and lists that live until its
    answer; the cyclic collector scanning them every 700 allocations cost 14 % of the fake's CPU on bodies with
    items (4 % without)."""
    from connector.cli import collect_garbage_rarely  # the command's tuning, not loaded by a fake in a test
    collect_garbage_rarely()
    sys.exit(main())


if __name__ == "__main__":
    serve()

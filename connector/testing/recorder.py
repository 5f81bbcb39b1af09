"""Another local HTTP server for tests: where the fake's redirect_next() points, or an alert webhook."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class Received:
    """One request a Recorder got."""

    method: str
    path: str
    had_access_token: bool
    body: bytes


class Recorder:
    """Another local HTTP server: where redirect_next() points, or an alert webhook. It records every
    request (and whether an Access-Token came with it) and answers 200 with TikTok's OK body, so a client
    that followed a redirect here would take its batch for delivered."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._lock:
                    recorder._received.append(Received(self.command, self.path, "Access-Token" in self.headers,
                                                       body))
                data = json.dumps({"code": 0, "message": "OK", "request_id": uuid.uuid4().hex, "data": {}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="recorder", daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/elsewhere"

    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def got_a_token(self) -> bool:
        return any(r.had_access_token for r in self.received())

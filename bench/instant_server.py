"""A server that answers every POST with TikTok's "OK" at once, without reading the events: an instrument
for bench/run.py, to measure the connector alone, on cores it does not share with the fake TikTok's
validation. Never a test double: it checks nothing.

    python bench/instant_server.py      # prints `listening on <base_url>`, like the fake
"""

from __future__ import annotations

import socket
import sys
import threading

import orjson

ANSWER = orjson.dumps({"code": 0, "message": "OK", "request_id": "instant", "data": {}})
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.lock = threading.Lock()


def serve(connection: socket.socket, counter: Counter) -> None:
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = connection.makefile("rb")
    with connection, reader:
        while request_line := reader.readline():
            length = 0
            while (header := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reader.read(length)
            if request_line.startswith(b"GET /_fake/stats"):
                with counter.lock:
                    body = orjson.dumps({"requests": counter.requests})
            else:
                with counter.lock:
                    counter.requests += 1
                body = ANSWER
            connection.sendall(HEAD % len(body) + body)


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    counter = Counter()
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}/open_api", flush=True)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection, counter), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)

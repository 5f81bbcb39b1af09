"""Terminal output: logging setup, a progress line for long runs, colour only on a TTY."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from .redaction import redact
from .report import SyncReport

log = logging.getLogger("connector")


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # arguments that do not fit the message: the handler reports it, as without this filter
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def redact_logs() -> None:
    """Put the filter on every connector logger, and urllib3's, which name URLs (a logger's filters only see
    records logged to it, not those of its children). Idempotent: called again for loggers made since."""
    known = list(logging.Logger.manager.loggerDict)  # one copy: another thread may be adding a logger
    for name in ["connector"] + [name for name in known if name.startswith(("connector.", "urllib3"))]:
        logging.getLogger(name).addFilter(_FILTER)  # added once: addFilter skips a filter it has


class _RedactingStream:
    """A text stream that masks secrets in what is written to it; anything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))

    def writelines(self, lines: Iterable[str]) -> None:
        self._stream.writelines(redact(line) for line in lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def redacted_output() -> Iterator[None]:
    """stdout and stderr, redacted, for as long as a command runs: whatever a command prints passes here,
    rows stored before redaction existed included."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _RedactingStream(sys.stdout), _RedactingStream(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, verbosity: int) -> None:
    """verbosity: -1 quiet (errors only), 0 warnings, 1 info, 2 debug. Logs go to stderr."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("connector")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    redact_logs()


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, colour: str, stream: TextIO | None = None) -> str:
    """Colour for a terminal; `stream` defaults to the current sys.stdout (it may be redirected later)."""
    codes = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2"}
    return f"\033[{codes[colour]}m{text}\033[0m" if use_colour(stream or sys.stdout) else text


class Progress:
    """On a terminal, one line redrawn in place; elsewhere a plain line every `interval` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.stream = stream = stream or sys.stderr
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self.started = time.monotonic()
        self.last = self.started if not self.tty else 0.0
        self.drawn = False

    def __call__(self, report: SyncReport) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        line = (f"{report.sync}: rows read {report.rows_read:,}, events sent {report.events_sent:,} "
                f"({report.events_sent / elapsed:,.0f}/s), not sent {report.events_rejected:,}, "
                f"duplicates {report.duplicates_skipped:,}")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False


def print_report(report: SyncReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), default=str), flush=True)
        return
    text = report.to_text()
    status = report.status.upper()
    colour = "green" if report.ok and report.health_label == "ok" else ("yellow" if report.ok else "red")
    print(text.replace(status, paint(status, colour), 1), flush=True)

"""Terminal output: where each kind of line goes, in which format; logging, progress, colour only on a TTY.

The conventions every command follows (one place, so each command only says what it has to say):
- stdout carries results: with --json exactly one JSON object per job, check or row, errors and skips included
  (`emit_error` prints `{"status": "error", "error": ..., "exit_code": N}`), and nothing else;
- stderr carries logs, the progress line, notes and error messages;
- with --log-format json every line on either stream is one JSON object with `time` (ISO 8601, UTC offset),
  `level`, `logger` and `message`: a human summary becomes such a record, with the result under `data`;
- -q leaves out progress, notes and run summaries; errors, and why a run failed or was partial, still show.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    hooks = sys.excepthook, sys.unraisablehook, threading.excepthook
    sys.stdout, sys.stderr = _RedactingStream(sys.stdout), _RedactingStream(sys.stderr)  # type: ignore[assignment]
    # Errors Python would print whole outside any handler: one a driver raises while it cleans up after a lost
    # connection (psycopg2 prints the COPY row it was sending), one in a thread, or in a finalizer. The command
    # reports its own failure; these go to the debug log, by class only (their text can quote rows).
    sys.excepthook = lambda kind, value, tb: _ignored(kind)
    sys.unraisablehook = lambda unraisable: _ignored(unraisable.exc_type)
    threading.excepthook = lambda args: _ignored(args.exc_type)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        sys.excepthook, sys.unraisablehook, threading.excepthook = hooks


def _ignored(kind: type[BaseException] | None) -> None:
    logging.getLogger("connector").debug("ignored an error raised outside the command: %s",
                                         kind.__name__ if kind else "unknown")


def iso_time(seconds: float | None = None) -> str:
    """A moment in ISO 8601 with date, milliseconds and the UTC offset: 2026-12-06T20:03:20.123+00:00."""
    moment = dt.datetime.fromtimestamp(time.time() if seconds is None else seconds, dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def json_default(value: Any) -> Any:
    """JSON for what reports and state rows hold besides JSON types. Times carry their offset: the state
    tables store UTC without one, so a naive time is UTC."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def json_text(value: Any, **options: Any) -> str:
    return json.dumps(value, default=json_default, **options)


def log_record(level: str, logger: str, message: str, **fields: Any) -> str:
    """One line of --log-format json."""
    return json_text({"time": iso_time(), "level": level, "logger": logger, "message": message, **fields})


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": iso_time(record.created), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        entry.update(getattr(record, "fields", {}))
        return json_text(entry)


class TextLogFormatter(logging.Formatter):
    """`2026-12-06T20:03:20.123+00:00 WARNING message`: a date and the offset, as every time the tool shows."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


def configure_logging(log_format: str, verbosity: int) -> None:
    """verbosity: -1 quiet (errors only), 0 warnings, 1 info, 2 debug. Logs go to stderr."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format == "json"
                         else TextLogFormatter("%(asctime)s %(levelname)s %(message)s"))
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
    """On a terminal, one line redrawn in place; elsewhere a plain line every `interval` seconds; with
    --log-format json a JSON record every `interval` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float | None = None, as_json: bool = False) -> None:
        self.stream = stream = stream or sys.stderr
        self.as_json = as_json
        self.tty = stream.isatty() and not as_json
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
        if self.as_json:
            counts = {"sync": report.sync, "rows_read": report.rows_read, "events_sent": report.events_sent,
                      "events_rejected": report.events_rejected, "duplicates_skipped": report.duplicates_skipped}
            self.stream.write(log_record("INFO", "connector.progress", line, **counts) + "\n")
        elif self.tty:
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


@dataclass
class OutputMode:
    json: bool = False  # --json
    log_json: bool = False  # --log-format json
    quiet: bool = False  # -q


MODE = OutputMode()


def configure_output(as_json: bool = False, log_json: bool = False, quiet: bool = False) -> None:
    """Set the conventions for this command (the CLI calls it once per invocation). MODE is changed in place:
    modules hold it by name."""
    MODE.json, MODE.log_json, MODE.quiet = as_json, log_json, quiet


def progress() -> Progress | None:
    """The progress line for a run, or None where it must not show (-q; --json on a pipe)."""
    if MODE.quiet or MODE.json and not MODE.log_json and not sys.stderr.isatty():
        return None
    return Progress(as_json=MODE.log_json)


def emit(report: SyncReport) -> None:
    """A job's report: one JSON object with --json; else its summary (-q: only why it failed or was partial)."""
    level = {0: "INFO", 3: "WARNING"}.get(report.exit_code, "ERROR")
    if report.status in ("skipped", "error"):  # a line on stderr, as errors and skips of whole commands
        if report.status == "error" or not MODE.quiet:
            label = "error" if report.status == "error" else "skipped"
            _stderr("ERROR" if report.status == "error" else "WARNING", "connector",
                    f"{label}: {report.error or '; '.join(report.notes)}")
        if MODE.json:
            print(json_text(report.to_dict()), flush=True)
        return
    if MODE.json:
        print(json_text(report.to_dict()), flush=True)
    elif MODE.quiet:
        problem = report.error or report.limit_crossed
        if report.exit_code and problem:
            _stderr(level, "connector.report", f"{report.sync}: {report.outcome}: {problem}")
        return
    elif MODE.log_json:
        print(log_record(level, "connector.report", report.to_text(), data=report.to_dict()), flush=True)
    else:
        colour = {0: "green", 3: "yellow"}.get(report.exit_code, "red")
        print(report.to_text().replace(report.outcome, paint(report.outcome, colour), 1), flush=True)


def emit_result(data: dict[str, Any], text: str | None, level: str = "INFO", logger: str = "connector") -> None:
    """A command's result: `data` as one JSON object with --json (a record with --log-format json), else
    `text` on stdout; None prints nothing in text mode. -q does not silence a result the user asked for:
    commands whose result is only a summary pass None then."""
    if MODE.json:
        print(json_text(data), flush=True)
    elif MODE.log_json:
        if text is not None or level != "INFO":
            print(log_record(level, logger, text or "", data=data), flush=True)
    elif text is not None:
        print(text, flush=True)


def emit_error(message: str, exit_code: int, status: str = "error", label: str = "error", **fields: Any) -> None:
    """An error (or skip, or interruption) that ends a command or one of its jobs: a line on stderr, and with
    --json one object on stdout, so every outcome is one object there."""
    _stderr("WARNING" if exit_code == 0 else "ERROR", "connector", f"{label}: {message}")
    if MODE.json:
        print(json_text({"status": status, "error": message, "exit_code": exit_code, **fields}), flush=True)


def emit_note(message: str, level: str = "INFO") -> None:
    """A note for the person at the terminal, on stderr (not with -q, unless it is an error)."""
    if MODE.quiet and level != "ERROR":
        return
    _stderr(level, "connector", message)


def _stderr(level: str, logger: str, message: str) -> None:
    line = log_record(level, logger, message) if MODE.log_json else message
    print(line, file=sys.stderr, flush=True)

"""The `tiktok-connector` command line: parse, run, print, and map errors to exit codes.

Exit codes: 0 success (or skipped because another run holds the sync), 1 a sync failed,
2 a configuration error, 3 partial: a sync rejected more rows than its max_reject_rate.
"""

from __future__ import annotations

import argparse
import gc
import datetime as dt
import sys
from collections.abc import Sequence

from . import commands
from .completion import SHELLS, completion_script
from .config import Project, load_project, parse_vars
from .errors import ConfigError, ConnectorError, SyncLocked
from .output import Progress, configure_logging, print_report, redacted_output
from .reasons import REASONS
from .runner import RETRYABLE_REASONS, RunOptions, run_sync

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_PARTIAL = 0, 1, 2, 3
DISTRIBUTION = "tiktok-connector"
_NAME_HELP = "a sync defined under syncs: in connector.yml"


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes. Before the command they set the defaults; after it, they are
    only applied when given (SUPPRESS), so `--project DIR sync` and `sync --project DIR` both work."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", default=default("."), metavar="DIR", help="project directory (default: .)")
    common.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable output: one JSON object per line")
    common.add_argument("--log-format", choices=("text", "json"), default=default("text"),
                        help="log lines on stderr")
    common.add_argument("-q", "--quiet", action="store_true", default=default(False), help="errors only, no progress")
    common.add_argument("-v", "--verbose", action="count", default=default(0), help="more log lines (-vv: debug)")
    common.add_argument("--target", default=default(None), metavar="NAME",
                        help="the target (environment) in connector.yml's targets: to use")
    common.add_argument("--vars", default=default(None), metavar="JSON",
                        help="""template values that win over connector.yml's, e.g. '{"min_total": 10}'""")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common_options(defaults=False)
    parser = argparse.ArgumentParser(prog="tiktok-connector", parents=[_common_options(defaults=True)],
                                     description="Send offline conversion events from your warehouse to TikTok.",
                                     epilog="exit codes: 0 ok, 1 a sync failed, 2 configuration error, "
                                            "3 rows rejected above max_reject_rate")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version, the distribution and where the package is installed")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                      help="one of these; 'tiktok-connector COMMAND --help' describes its options")

    init = commands_.add_parser("init", parents=[common], help="create a project with a sample warehouse")
    init.add_argument("directory", nargs="?", default=".", metavar="DIR",
                      help="where to write the project (default: .; must not hold a connector.yml yet)")

    check = commands_.add_parser("check", parents=[common],
                                 help="validate config, queries and mappings, and verify the token with TikTok")
    check.add_argument("names", nargs="*", metavar="NAME", help="syncs to check (default: all)")
    check.add_argument("--test-event-code", metavar="CODE", help="also send one test event with this code")

    preview = commands_.add_parser("preview", parents=[common],
                                   help="show the SQL and the first request bodies exactly as they would be sent")
    preview.add_argument("name", metavar="NAME", help=_NAME_HELP)
    preview.add_argument("--limit", type=_positive, default=3, metavar="N", help="events to show (default 3)")

    sync = commands_.add_parser("sync", parents=[common], help="run syncs (all when no NAME is given)")
    sync.add_argument("names", nargs="*", metavar="NAME", help="syncs or audiences to run (default: all)")
    sync.add_argument("--select", "-s", nargs="+", metavar="SELECTOR",
                      help="run what these pick: NAME, a glob (orders_*), tag:TAG, sync:NAME or audience:NAME")
    sync.add_argument("--exclude", nargs="+", metavar="SELECTOR", help="leave out what these pick")
    sync.add_argument("--dry-run", action="store_true", help="read, map and validate, but send nothing and keep state")
    sync.add_argument("--test-event-code", metavar="CODE",
                      help="send with TikTok's test_event_code; state is left untouched")

    backfill = commands_.add_parser("backfill", parents=[common],
                                    help="send events with event time in [--start, --end); the watermark stays")
    backfill.add_argument("name", metavar="NAME", help=_NAME_HELP)
    backfill.add_argument("--start", required=True, type=_date, help="first day or time (UTC), e.g. 2026-11-01")
    backfill.add_argument("--end", required=True, type=_date, help="end, exclusive (UTC), e.g. 2026-11-15")
    backfill.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    backfill.add_argument("--resend", action="store_true",
                          help="also send events the ledger says TikTok acknowledged (TikTok dedups only 48 h)")

    retry = commands_.add_parser("retry", parents=[common],
                                 help="re-read and re-send rows whose rejects are unresolved")
    retry.add_argument("name", metavar="NAME", help=_NAME_HELP)
    retry.add_argument("--reason", action="append", metavar="REASON",
                       help=f"reasons to retry (repeatable; default: {', '.join(sorted(RETRYABLE_REASONS))})")

    status = commands_.add_parser("status", parents=[common], help="every sync's watermark, last run and health")
    status.set_defaults(names=[])

    history = commands_.add_parser("history", parents=[common], help="past runs of a sync")
    history.add_argument("name", metavar="NAME", help=_NAME_HELP)
    history.add_argument("--limit", type=int, default=20, metavar="N", help="runs to show, newest first (default 20)")

    rejects = commands_.add_parser("rejects", parents=[common], help="rows not sent, by reason; export them")
    rejects.add_argument("name", metavar="NAME", help=_NAME_HELP)
    rejects.add_argument("--reason", choices=sorted(REASONS), metavar="REASON",
                         help=f"only rejects with this reason: {', '.join(sorted(REASONS))}")
    rejects.add_argument("--all", action="store_true", help="include rejects resolved by retry")
    rejects.add_argument("--limit", type=int, default=20, metavar="N", help="rows to show (default 20)")
    rejects.add_argument("--export", metavar="FILE", help="write every matching reject to FILE (.csv or .json)")

    reset = commands_.add_parser("reset", parents=[common],
                                 help="forget a sync's watermark, ledger and rejects (asks first)")
    reset.add_argument("name", metavar="NAME", help=_NAME_HELP)
    reset.add_argument("--yes", action="store_true", help="do not ask")
    reset.add_argument("--force", action="store_true",
                       help="reset even though a run holds the sync's lease (only when that process is dead)")

    demo = commands_.add_parser("demo", parents=[common],
                                help="build a sample DuckDB warehouse and sync it to a local fake TikTok server")
    demo.add_argument("--orders", type=int, default=2000, metavar="N", help="orders to generate (default 2000)")

    completion = commands_.add_parser("completion", parents=[common],
                                      help="print a shell completion script (bash, zsh or fish)",
                                      epilog="e.g. eval \"$(tiktok-connector completion bash)\" in ~/.bashrc; "
                                             "zsh: source <(tiktok-connector completion zsh) after compinit; "
                                             "fish: tiktok-connector completion fish | source")
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help=f"one of {', '.join(SHELLS)}")

    for choice in commands_._choices_actions:  # `COMMAND --help` describes the command as the list does
        commands_.choices[choice.dest].description = choice.help
    return parser


def console() -> None:
    """The `tiktok-connector` command: a process of its own, so it may tune the garbage collector.

    Events are short-lived acyclic dicts freed by reference counting; the cyclic collector scanning every
    700 allocations costs 10-15 % of a sync."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (exit 2) and --help (exit 0), as a return value
        return int(exc.code or 0)
    configure_logging(args.log_format, -1 if args.quiet else args.verbose)
    try:
        with redacted_output():  # what commands print passes connector.redaction (errors below redact themselves)
            return _dispatch(args)
    except SyncLocked as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConnectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _full_error(args, getattr(exc, "full_text", None), str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: state is committed per acknowledged batch, run again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "completion":
        print(completion_script(_parser(), args.shell), end="")
        return EXIT_OK
    if command == "demo":
        from .demo import run_demo
        return run_demo(args.project, orders=args.orders, as_json=args.json)
    if command == "init":
        return commands.init(args.directory)
    if command == "check":
        return commands.check(args.project, args.names, args.json, args.test_event_code)
    if command == "preview":
        return commands.preview(args.project, args.name, args.limit, args.json)
    if command == "status":
        return commands.status(args.project, args.json)
    if command == "history":
        return commands.history(args.project, args.name, args.limit, args.json)
    if command == "rejects":
        return commands.rejects(args.project, args.name, args.reason, args.all, args.limit, args.export, args.json)
    if command == "reset":
        return commands.reset(args.project, args.name, args.yes, args.force)
    return _sync(args)


def _full_error(args: argparse.Namespace, full: str | None, shown: str | None) -> None:
    """Warehouse errors are shown with the values they quote masked; -v shows the warehouse's own text."""
    if args.verbose and full and full != shown:
        print(f"the warehouse's full error text (-v): {full}", file=sys.stderr)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def version_text() -> str:
    """What `--version` prints. The import name `connector` is generic, so it also names the folder the
    package was imported from and any other installed distribution that ships a top-level `connector`."""
    from importlib.metadata import packages_distributions
    from pathlib import Path
    package = Path(__file__).resolve().parent
    others = sorted(set(packages_distributions().get(package.name, [])) - {DISTRIBUTION})
    clash = f"; other distributions with a top-level '{package.name}': {', '.join(others)}" if others else ""
    return f"{DISTRIBUTION} {_version()} (distribution {DISTRIBUTION}, package at {package}{clash})"


class _VersionAction(argparse.Action):
    """--version, computed only when asked: finding other distributions reads every installed one."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit()


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _date(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-01 or 2026-11-01T12:00") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _options(args: argparse.Namespace) -> RunOptions:
    if args.command == "backfill":
        if args.end <= args.start:
            raise ConfigError("backfill --end", "must be after --start", "the range is [start, end)")
        return RunOptions(dry_run=args.dry_run, backfill=(args.start, args.end), resend=args.resend)
    if args.command == "retry":
        reasons = frozenset(args.reason or RETRYABLE_REASONS)
        unknown = reasons - set(REASONS)
        if unknown:
            raise ConfigError("retry --reason", f"unknown reason {sorted(unknown)[0]!r}",
                              f"known: {', '.join(sorted(REASONS))}")
        return RunOptions(retry_reasons=reasons)
    return RunOptions(dry_run=args.dry_run, test_event_code=args.test_event_code)


def _project(args: argparse.Namespace) -> Project:
    """The project as --project, --target and --vars say."""
    return load_project(args.project, args.target, parse_vars(args.vars) if args.vars else None)


def _sync(args: argparse.Namespace) -> int:
    project = _project(args)
    if args.command == "sync":
        syncs = project.select(args.names, args.select, args.exclude)
    else:
        syncs = project.select([args.name])
    options = _options(args)
    exit_code = EXIT_OK
    for sync in syncs:
        progress = None if args.quiet or args.json and not sys.stderr.isatty() else Progress()
        options.progress = progress
        try:
            report = run_sync(project, sync, options)
        finally:
            if progress:
                progress.done()
        print_report(report, args.json)
        _full_error(args, report.error_detail, report.error)
        if not report.ok:
            exit_code = EXIT_FAILED
        elif report.health_label == "rejecting" and exit_code == EXIT_OK:
            exit_code = EXIT_PARTIAL
    return exit_code

"""The `tiktok-connector` command line: parse, run, print, and map errors to exit codes.

Exit codes (the Python API's `report.exit_code` says the same for one run):
0  success, also a run skipped because another run holds the sync's lease
1  a job failed (query, warehouse, TikTok, state), or a check failed
2  a configuration error (connector.yml, a mapping, a query file, an option), found before anything is sent
3  partial: a run succeeded but rejected more rows than its max_reject_rate (the summary says by how much)
4  `check` only: nothing could be verified (TikTok unreachable, the DuckDB file open for writing elsewhere)
130 interrupted (Ctrl-C); state is committed per acknowledged batch
When several jobs run, the exit code is the worst of theirs: 2, then 1, then 4, then 3, then 0.

Output conventions (connector.output): results on stdout, everything else on stderr; --json prints one JSON
object per job for every outcome and nothing else on stdout; --log-format json makes every line JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from . import audience_commands, commands, output
from .completion import SHELLS, completion_script
from .config import JobSettings, Project, load_project, parse_vars
from .errors import ConfigError, ConnectorError, SyncLocked
from .invocation import Invocation, check_output_path, run_job, run_jobs, utc_now
from .output import configure_logging, configure_output, emit, emit_error, emit_note, redacted_output
from .reasons import REASONS
from .report import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_UNVERIFIED  # noqa: F401 - documented
from .report import SyncReport
from .runner import RETRYABLE_REASONS, RunOptions

EXIT_INTERRUPTED = 130
DISTRIBUTION = "tiktok-connector"
_NAME_HELP = "a sync defined under syncs: in connector.yml"
_JOB_HELP = "a sync or an audience (syncs: or audiences: in connector.yml)"
_SELECT_HELP = "run what these pick: NAME, a glob (orders_*), tag:TAG, sync:NAME or audience:NAME"
_OUTPUT_HELP = ("also write the invocation's results to FILE as one JSON document (metadata, arguments, "
                "one result per job), like dbt's run_results.json")


class UsageError(Exception):
    """A command line argparse refuses: reported by main() in the invocation's output format (exit 2)."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes. Before the command they set the defaults; after it, they are
    only applied when given (SUPPRESS), so `--project DIR sync` and `sync --project DIR` both work."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS
    common = _Parser(add_help=False)
    common.add_argument("--project", default=default("."), metavar="DIR", help="project directory (default: .)")
    common.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable output: one JSON object per job, check or row on stdout, for "
                             "every outcome (errors and skips included), and nothing else there")
    common.add_argument("--log-format", choices=("text", "json"), default=default("text"),
                        help="json: every line written (logs, progress, summaries, errors) is one JSON object")
    common.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="errors only: no progress, notes or run summaries (why a run failed or was "
                             "partial still shows; status, history, rejects and preview still print)")
    common.add_argument("-v", "--verbose", action="count", default=default(0), help="more log lines (-vv: debug)")
    common.add_argument("--target", default=default(None), metavar="NAME",
                        help="the target (environment) in connector.yml's targets: to use")
    common.add_argument("--vars", default=default(None), metavar="JSON",
                        help="""template values that win over connector.yml's, e.g. '{"min_total": 10}'""")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common_options(defaults=False)
    parser = _Parser(prog="tiktok-connector", parents=[_common_options(defaults=True)],
                     description="Send offline conversion events from your warehouse to TikTok.",
                     epilog="exit codes: 0 ok (or skipped: another run holds the sync), 1 a job failed, "
                            "2 configuration error, 3 rows rejected above max_reject_rate, 4 check could verify "
                            "nothing")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version, the distribution and where the package is installed")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                      help="one of these; 'tiktok-connector COMMAND --help' describes its options")

    init = commands_.add_parser("init", parents=[common], help="create a project with a sample warehouse")
    init.add_argument("directory", nargs="?", default=None, metavar="DIR",
                      help="where to write the project (default: --project, else .; must not hold a "
                           "connector.yml yet)")

    check = commands_.add_parser("check", parents=[common],
                                 help="validate config, queries and mappings, and verify the token with TikTok")
    check.add_argument("names", nargs="*", metavar="NAME", help="syncs and audiences to check (default: all)")
    check.add_argument("--select", "-s", nargs="+", metavar="SELECTOR", help=_SELECT_HELP.replace("run", "check"))
    check.add_argument("--exclude", nargs="+", metavar="SELECTOR", help="leave out what these pick")
    check.add_argument("--test-event-code", metavar="CODE", help="also send one test event with this code")
    check.add_argument("--output", metavar="FILE", help=_OUTPUT_HELP)

    preview = commands_.add_parser("preview", parents=[common],
                                   help="show the SQL and the first request bodies exactly as they would be sent "
                                        "(for an audience also what a run would add and remove); sends nothing")
    preview.add_argument("name", metavar="NAME", help=_JOB_HELP)
    preview.add_argument("--limit", type=_positive, default=3, metavar="N",
                         help="events (or audience members) to show (default 3)")

    sync = commands_.add_parser("sync", parents=[common], help="run syncs and audiences (all when no NAME is given)")
    sync.add_argument("names", nargs="*", metavar="NAME", help="syncs or audiences to run (default: all)")
    sync.add_argument("--select", "-s", nargs="+", metavar="SELECTOR", help=_SELECT_HELP)
    sync.add_argument("--exclude", nargs="+", metavar="SELECTOR", help="leave out what these pick")
    sync.add_argument("--dry-run", action="store_true", help="read, map and validate, but send nothing and keep state")
    sync.add_argument("--test-event-code", metavar="CODE",
                      help="send with TikTok's test_event_code; state is left untouched")
    sync.add_argument("--allow-mass-delete", action="store_true",
                      help="audiences: run even when more than max_delete_fraction of the members would be removed")
    sync.add_argument("--output", metavar="FILE", help=_OUTPUT_HELP)
    sync.add_argument("--threads", type=_positive, metavar="N",
                      help="run up to N jobs at once in this process, sharing each access token's rate limit "
                           "(default: connector.yml's threads:, else 1)")

    backfill = commands_.add_parser("backfill", parents=[common],
                                    help="send events with event time in [--start, --end); the watermark stays")
    backfill.add_argument("name", metavar="NAME", help=_NAME_HELP)
    backfill.add_argument("--start", required=True, type=_date, help="first day or time (UTC), e.g. 2026-11-01")
    backfill.add_argument("--end", required=True, type=_date, help="end, exclusive (UTC), e.g. 2026-11-15")
    backfill.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    backfill.add_argument("--resend", action="store_true",
                          help="also send events the ledger says TikTok acknowledged (TikTok dedups only 48 h)")
    backfill.add_argument("--output", metavar="FILE", help=_OUTPUT_HELP)

    retry = commands_.add_parser("retry", parents=[common],
                                 help="re-read and re-send rows whose rejects are unresolved")
    retry.add_argument("name", metavar="NAME", help=_NAME_HELP)
    retry.add_argument("--reason", action="append", metavar="REASON",
                       help=f"reasons to retry (repeatable; default: {', '.join(sorted(RETRYABLE_REASONS))})")
    retry.add_argument("--output", metavar="FILE", help=_OUTPUT_HELP)

    status = commands_.add_parser("status", parents=[common],
                                  help="every sync's watermark, last run and health; every audience's members in state")
    status.add_argument("names", nargs="*", metavar="NAME", help="syncs and audiences to show (default: all)")
    status.add_argument("--select", "-s", nargs="+", metavar="SELECTOR", help=_SELECT_HELP.replace("run", "show"))
    status.add_argument("--exclude", nargs="+", metavar="SELECTOR", help="leave out what these pick")

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
                                 help="forget a sync's watermark, ledger and rejects, or an audience's membership "
                                      "state (asks first; TikTok is not changed)")
    reset.add_argument("name", metavar="NAME", help=_JOB_HELP)
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

    commands_.add_parser("schema", parents=[common],
                         help="print the JSON Schema of connector.yml (init writes a copy editors read offline)",
                         epilog="e.g. tiktok-connector schema > .tiktok-connector/connector.schema.json after an "
                                "upgrade")

    for choice in commands_._choices_actions:  # `COMMAND --help` describes the command as the list does
        commands_.choices[choice.dest].description = choice.help
    return parser


def console() -> None:
    """The `tiktok-connector` command: a process of its own, so it may tune the garbage collector.

    Events are short-lived acyclic dicts freed by reference counting; the cyclic collector scanning every
    700 allocations costs 10-15 % of a sync."""
    collect_garbage_rarely()
    sys.exit(main())


def collect_garbage_rarely() -> None:
    """For a process of its own that makes many short-lived dicts and lists (the command, the fake TikTok): the
    objects loaded so far are left out of every collection, and the cyclic collector runs every 100,000
    allocations instead of 700."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        return _usage_error(list(sys.argv[1:] if argv is None else argv), exc)
    except SystemExit as exc:  # --help and --version (exit 0), as a return value
        return int(exc.code or 0)
    configure_logging(args.log_format, -1 if args.quiet else args.verbose)
    configure_output(args.json, args.log_format == "json", args.quiet)
    invocation = Invocation(args.command, _recorded_args(args))
    # What commands print passes connector.redaction (errors below redact themselves); a static text does not.
    with redacted_output() if args.command not in ("schema", "completion") else contextlib.nullcontext():
        code = _run(args, invocation)
        target = Path(args.output) if getattr(args, "output", None) else None
        if target is not None and target.parent.is_dir() and not target.is_dir():  # else refused, exit 2
            code = _write_results(target, invocation, code)
    return code


def _run(args: argparse.Namespace, invocation: Invocation) -> int:
    try:
        return _dispatch(args, invocation)
    except SyncLocked as exc:
        emit_error(str(exc), EXIT_OK, status="skipped", label="skipped")
        return EXIT_OK
    except ConfigError as exc:
        invocation.error = str(exc)
        emit_error(str(exc), EXIT_CONFIG)
        return EXIT_CONFIG
    except ConnectorError as exc:
        invocation.error = str(exc)
        emit_error(str(exc), exc.exit_code)
        _full_error(args, getattr(exc, "full_text", None), str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        invocation.error = "interrupted"
        emit_error("state is committed per acknowledged batch, run again to resume", EXIT_INTERRUPTED,
                   status="interrupted", label="interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def _usage_error(argv: list[str], exc: UsageError) -> int:
    """argparse's refusal, in the format the command line asked for (it is parsed before the options are)."""
    as_json = "--json" in argv
    log_json = any(a == "--log-format=json" or a == "json" and argv[i - 1] == "--log-format"
                   for i, a in enumerate(argv) if i)
    configure_output(as_json, log_json)
    if not log_json:
        print(exc.usage, end="", file=sys.stderr)
    emit_error(f"{exc} (see tiktok-connector --help)", EXIT_CONFIG, label="tiktok-connector: error")
    return EXIT_CONFIG


def _recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments for the run-results file; redacted with the document."""
    skipped = {"json", "log_format", "quiet", "verbose", "output"}
    recorded = {key: value for key, value in vars(args).items() if key not in skipped and value not in (None, [])}
    recorded["project"] = str(Path(args.project).resolve())
    return recorded


def _write_results(path: Path, invocation: Invocation, code: int) -> int:
    invocation.finished_at = utc_now()
    try:
        invocation.write(path, code, _version())
    except OSError as exc:
        emit_note(f"error: could not write --output {path}: {exc.strerror or exc}", "ERROR")
        return code or EXIT_FAILED
    return code


def _dispatch(args: argparse.Namespace, invocation: Invocation) -> int:
    command = args.command
    if getattr(args, "output", None):
        check_output_path("--output", Path(args.output))
    if command == "completion":
        print(completion_script(_parser(), args.shell), end="")
        return EXIT_OK
    if command == "schema":
        return commands.schema()
    if command == "demo":
        from .demo import run_demo
        return run_demo(args.project, orders=args.orders, as_json=args.json)
    if command == "init":
        return commands.init(args.directory or args.project)
    if command == "check":
        project = _project(args)
        jobs = project.select(args.names, args.select, args.exclude)
        return commands.check(project, jobs, args.test_event_code, invocation)
    if command == "preview":
        return commands.preview(_project(args), args.name, args.limit)
    if command == "status":
        project = _project(args)
        return commands.status(project, project.select(args.names, args.select, args.exclude),
                               cover_num=audience_commands.cover_num_lookup(project))
    if command == "history":
        return commands.history(_project(args), args.name, args.limit)
    if command == "rejects":
        return commands.rejects(_project(args), args.name, args.reason, args.all, args.limit, args.export)
    if command == "reset":
        return commands.reset(_project(args), args.name, args.yes, args.force)
    return _sync(args, invocation)


def _full_error(args: argparse.Namespace, full: str | None, shown: str | None) -> None:
    """Warehouse errors are shown with the values they quote masked; -v shows the warehouse's own text."""
    if args.verbose and full and full != shown:
        emit_note(f"the warehouse's full error text (-v): {full}", "ERROR")


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
    return RunOptions(dry_run=args.dry_run, test_event_code=args.test_event_code,
                      allow_mass_delete=args.allow_mass_delete)


def _project(args: argparse.Namespace) -> Project:
    """The project as --project, --target and --vars say."""
    return load_project(args.project, args.target, parse_vars(args.vars) if args.vars else None)


def _sync(args: argparse.Namespace, invocation: Invocation) -> int:
    project = _project(args)
    if args.command == "sync":
        syncs = project.select(args.names, args.select, args.exclude)
    else:
        syncs = project.select([args.name])
    options = _options(args)
    threads = getattr(args, "threads", None) or project.threads
    if threads > 1 and len(syncs) > 1:
        return _sync_together(args, invocation, project, syncs, options, threads)
    for sync in syncs:
        progress = output.progress()
        options.progress = progress
        try:
            report = run_job(project, sync, options)
        finally:
            if progress:
                progress.done()
        _report(args, invocation, report)
    return invocation.exit_code


def _sync_together(args: argparse.Namespace, invocation: Invocation, project: Project, jobs: list[JobSettings],
                   options: RunOptions, threads: int) -> int:
    """`threads` jobs at a time; each report is printed as its job ends. One progress line serves them all
    (it names the job it reports on)."""
    progress = output.progress()
    try:
        run_jobs(project, jobs, replace(options, progress=progress), threads,
                 done=lambda report: _report(args, invocation, report), run=run_job)
    finally:
        if progress:
            progress.done()
    return invocation.exit_code




def _report(args: argparse.Namespace, invocation: Invocation, report: SyncReport) -> None:
    emit(report)
    _full_error(args, report.error_detail, report.error)
    invocation.add_report(report)

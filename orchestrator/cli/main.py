"""The ``orchestrator`` command: argument parsing and output only.

Commands read the journal through the journal layer's reader and never reach into a
daemon's memory. Exit codes: 0 success, 1 the run or action failed, 2 bad usage or input,
141 stdout closed before everything was written (what a process killed by SIGPIPE returns).
Heavy modules are imported inside the command that needs them, to keep start-up small.

Bad input is one line on stderr, ``error:`` then what is wrong, where, and how to fix it;
never a traceback (an ambiguous run id prefix adds its candidates, one a line). Every line
printed for a human goes through `output.escape`. Every command that takes a RUN_ID takes a
unique prefix of it too (`run_ids`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..errors import JournalError, OrchestratorError, PipelineError, RunNotFound, ValidationError
from ..records import FINAL_STATUSES, STATUSES
from .arguments import EXIT_USAGE, Parser, UsageError, check_text, excerpt
from .run_ids import SHOWN, resolved

if TYPE_CHECKING:
    from ..journal import JournalBackend, JournalCommands, JournalQueries
    from .daemons import Registration
    from .emitting import EmitReport

EXIT_OK, EXIT_FAILED = 0, 1  # EXIT_USAGE (2) comes with the argument checks
# stdout was closed before everything was written (`orchestrator runs | head -1`): what a
# shell reports for a process killed by SIGPIPE (128 + 13), as `cat` or `seq` would give.
EXIT_STDOUT_CLOSED = 141
DAEMON_LOG = "orchestrator.log"  # `up` with the dashboard on a server's journal logs here
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``orchestrator`` console script."""
    try:
        try:
            code = _main(argv)
        finally:  # a reader that went away fails here, not in the interpreter's exit
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        code = _stdout_closed()
    sys.exit(code)


def _main(argv: Sequence[str] | None) -> int:
    # A terminal whose encoding cannot show a character (LANG=en_US.ISO-8859-1) gets an
    # escape, as stderr does, not a UnicodeEncodeError; in JSON strings it is valid JSON.
    with contextlib.suppress(AttributeError, ValueError):  # not a TextIOWrapper, or closed
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    args = _parser().parse_args(argv)
    try:
        check_text(args)
        outcome = args.handler(args)
        code: int = _run(outcome) if isinstance(outcome, Coroutine) else outcome
        return code
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE, *exc.more)
    except (ValidationError, JournalError, RunNotFound) as exc:
        return _fail(f"{exc} [{exc.code}]", EXIT_USAGE)
    except OrchestratorError as exc:
        return _fail(f"{exc} [{exc.code}]", EXIT_FAILED)
    except KeyboardInterrupt:
        return 130


def _stdout_closed() -> int:
    """Stay quiet once stdout's reader is gone; the exit code that says so."""
    # Python flushes stdout again at exit and would print "Exception ignored ...
    # BrokenPipeError": point the descriptor at /dev/null first.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_STDOUT_CLOSED


def _out(text: str) -> None:
    """Print a command's result on stdout (`BrokenPipeError` if stdout is closed)."""
    if sys.stdout is None:  # started with descriptor 1 closed: print would drop the text
        raise BrokenPipeError(errno.EPIPE, "stdout is closed")
    print(text)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run async work (asyncio is imported only by the commands that need it)."""
    import asyncio

    return asyncio.run(work)


def _fail(message: str, code: int, *more: str) -> int:
    """Print `message` (then `more` lines) on stderr, each escaped; return `code`."""
    from .output import escape

    for line in (f"error: {message}", *more):
        print(escape(line), file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="orchestrator", description="A durable local workflow orchestrator.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Not journaled: it takes --db (as every command does) and leaves the journal alone.
    run = _command(commands, "run", _cmd_run, "run one pipeline file once, in process")
    run.add_argument("file", type=Path, help="a Python file that binds `pipeline`")
    run.add_argument("--state", default="{}", help="the initial state, a JSON object")
    run.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="RE",
        help="only modules matching this regular expression may be imported",
    )
    run.add_argument(
        "--block",
        action="append",
        default=[],
        metavar="MOD",
        help="also block this module (adds to the default list)",
    )
    run.add_argument(
        "--module-home",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder to import adaptor modules from, for this run only",
    )

    # Not journaled either: `run` takes a pipeline file, `try` a workflow file.
    trial = _command(
        commands,
        "try",
        _cmd_try,
        "run one trigger of a workflow file once, in process, on a throwaway journal",
    )
    trial.add_argument("file", type=Path, metavar="FILE", help="a workflow file")
    trial.add_argument(
        "names",
        nargs="+",
        metavar="[WORKFLOW] TRIGGER [JSON]",
        help="the trigger (and its workflow, if the file has several), then the run's state",
    )
    trial.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="stop a run still running after this long (default 60)",
    )
    trial.add_argument("--json", action="store_true", help="print the run as `show --json` does")
    trial.usage = (  # argparse would show NAMES as "... [[WORKFLOW] TRIGGER [JSON] ...]"
        "orchestrator try [-h] [--timeout SECONDS] [--json] FILE [WORKFLOW] TRIGGER [JSON]"
    )

    runs = _command(commands, "runs", _cmd_runs, "list runs, newest first")
    # Plain strings: argparse's "invalid choice" message shows each choice's repr.
    statuses = [status.value for status in STATUSES]
    runs.add_argument("--status", choices=statuses, help="only runs with this status")
    runs.add_argument("--workflow", metavar="W", help="only runs of this workflow")
    runs.add_argument(
        "--limit", type=_positive_int, default=100, metavar="N", help="at most N runs (default 100)"
    )
    runs.add_argument(
        "--since",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="only runs created within this long ago: 45s, 90m, 12h, 30d or seconds",
    )
    runs.add_argument("--json", action="store_true", help="print JSON")

    emit = _command(
        commands,
        "emit",
        _cmd_emit,
        "journal an event; print its id, and on stderr what it started or resumed",
    )
    emit.add_argument("type", metavar="TYPE", help="the event type, e.g. payment.received")
    emit.add_argument("data", metavar="JSON", nargs="?", default="{}", help="the event's data")
    emit.add_argument(
        "--key",
        metavar="K",
        help="idempotency key: an emit with a key seen before prints the first event's id",
    )
    emit.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for the daemon to route it; say only whether anything listens",
    )
    emit.add_argument(
        "--json", action="store_true", help="print the event id and what routing did as JSON"
    )

    resume = _command(commands, "resume", _cmd_resume, "resume a paused run")
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "patch", metavar="JSON", nargs="?", default="{}", help="merged into the run's state"
    )

    signal = _command(commands, "signal", _cmd_signal, "patch an active run's state")
    signal.add_argument("run_id", metavar="RUN_ID")
    signal.add_argument("patch", metavar="JSON", help="merged into the run's state")

    abort = _command(commands, "abort", _cmd_abort, "end a run that is not final")
    abort.add_argument("run_id", metavar="RUN_ID")

    retry = _command(commands, "retry", _cmd_retry, "continue a failed or aborted run")
    retry.add_argument("run_id", metavar="RUN_ID")
    retry.add_argument(
        "patch", metavar="JSON", nargs="?", default="{}", help="merged into the run's state"
    )

    fork = _command(commands, "fork", _cmd_fork, "start a new run from a run's state; print its id")
    fork.add_argument("run_id", metavar="RUN_ID")
    fork.add_argument(
        "--from",
        dest="from_step",
        metavar="STEP",
        help="the step it starts at, with the state before it (default: the first step)",
    )
    fork.add_argument(
        "patch", metavar="JSON", nargs="?", default="{}", help="merged into the new run's state"
    )
    fork.intermixed = True

    for name, handler, does in (
        ("disable", _cmd_disable, "stop a workflow (or one trigger) from starting runs"),
        ("enable", _cmd_enable, "let a disabled workflow (or trigger) start runs again"),
    ):
        switch = _command(commands, name, handler, does)
        switch.add_argument("workflow", metavar="WORKFLOW", help="a workflow id (loaded or not)")
        switch.add_argument(
            "trigger", metavar="TRIGGER", nargs="?", default=None, help="only this trigger"
        )

    up = _command(commands, "up", _cmd_up, "load and watch a folder of workflows: the daemon")
    up.add_argument("folder", type=Path, metavar="DIR", help="the folder of workflow files")
    up.add_argument("--headless", action="store_true", help="no dashboard: log to stderr only")
    up.add_argument(
        "--grace",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long running steps may finish (default 10)",
    )
    up.add_argument(
        "--max-recoveries",
        type=_count(0),
        default=3,
        metavar="N",
        help="restarts a run's step may die in before its run fails CRASH_LOOP (default 3)",
    )
    up.add_argument(
        "--workers",
        type=_count(1),
        default=None,
        metavar="N",
        help="worker processes of isolated steps at most (default: 2 per core, at least 16)",
    )
    up.add_argument(
        "--no-isolate",
        action="store_true",
        help="run sync steps in threads, not worker processes (unless they ask otherwise)",
    )
    up.add_argument(
        "--no-run-segments",
        action="store_true",
        help="on a shared journal, spread isolated steps only, not whole runs, over the daemons",
    )

    tui = _command(commands, "tui", _cmd_tui, "the dashboard, attached to a journal")
    tui.add_argument("--read-only", action="store_true", help="show everything, change nothing")

    invoke = _command(commands, "invoke", _cmd_invoke, "start a run through the daemon")
    invoke.add_argument("workflow", metavar="WORKFLOW")
    invoke.add_argument("trigger", metavar="TRIGGER", help="the pipeline's trigger id")
    invoke.add_argument("data", metavar="JSON", nargs="?", default="{}", help="the run's state")
    invoke.add_argument(
        "--wait", action="store_true", help="wait until the run completes, pauses or fails"
    )
    invoke.add_argument(
        "--key",
        metavar="K",
        help="idempotency key: an invoke with a key seen before starts nothing (the first run's)",
    )

    workflows = _command(commands, "workflows", _cmd_workflows, "loaded workflows, load errors")
    workflows.add_argument("--json", action="store_true", help="print JSON")

    prune = _command(
        commands, "prune", _cmd_prune, "delete final runs that ended long ago; prints counts"
    )
    prune.add_argument(
        "--older-than",
        type=_duration,
        default=30 * 86400.0,
        metavar="AGE",
        help="runs that ended longer ago than this: 45s, 90m, 12h, 30d or seconds (30d)",
    )
    prune.add_argument(
        "--status",
        action="append",
        choices=sorted(str(status) for status in FINAL_STATUSES),
        help="only runs with this final status (repeatable; default: every final status)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.add_argument(
        "--vacuum",
        action="store_true",
        help="first convert an older journal (made before prune existed) to give space back "
        "(rewrites the file: stop the daemon first)",
    )
    prune.add_argument("--json", action="store_true", help="print JSON")

    logs = _command(
        commands, "logs", _cmd_logs, "timeline entries of one run or of all, oldest first"
    )
    logs.add_argument("run_id", metavar="RUN_ID", nargs="?", help="only this run (or a prefix)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    logs.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="the last N entries (default 100)",
    )
    logs.add_argument("--json", action="store_true", help="one JSON object a line")

    show = _command(commands, "show", _cmd_show, "one run: status, state, timeline")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="print JSON")

    journal_help = "administer the journal itself (a PostgreSQL journal's schema)"
    journal = commands.add_parser("journal", help=journal_help, description=journal_help)
    journal_commands = journal.add_subparsers(
        dest="journal_command", required=True, metavar="COMMAND"
    )
    migrate = _command(
        journal_commands,
        "migrate",
        _cmd_journal_migrate,
        "create or upgrade a PostgreSQL journal's schema (--db postgresql://...)",
    )
    migrate.add_argument("--json", action="store_true", help="print JSON")
    copy = _command(
        journal_commands,
        "copy",
        _cmd_journal_copy,
        "copy a SQLite journal into a new PostgreSQL one, ids kept (no daemon may run on SRC)",
    )
    copy.add_argument("source", metavar="SRC", help="the SQLite journal file")
    copy.add_argument("destination", metavar="DST", help="a postgresql:// URL, holding no journal")
    copy.add_argument("--json", action="store_true", help="print JSON")
    return parser


class _Version(argparse.Action):
    """``--version``: the installed package's version (looked up only when asked for)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("durable-orchestrator")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "(not installed)"
        _out(f"orchestrator {found}")
        parser.exit()


Handler = Callable[[argparse.Namespace], int | Coroutine[Any, Any, int]]


def _command(commands: Any, name: str, handler: Handler, help: str) -> Parser:
    """A subcommand (a `Parser`, as its parent is); it takes ``--db``, as every command does."""
    sub: Parser = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=handler)
    _add_db(sub)
    return sub


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="the journal (default: $ORCHESTRATOR_DB, else ./orchestrator.db)",
    )


def _positive_int(text: str) -> int:
    number = text.strip()
    body = number[1:] if number[:1] in ("+", "-") else number
    if body.isdecimal() and len(body.lstrip("0")) > 18:  # past SQLite's range, maybe int()'s
        if number.startswith("-"):
            raise argparse.ArgumentTypeError(f"expected a number >= 1, got {excerpt(text)}")
        return sys.maxsize  # the most SQLite takes: more than any journal holds
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {excerpt(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {excerpt(text)}")
    return value


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number, got {excerpt(text)}"
            ) from None
        if value < least or value > 1_000_000:
            raise argparse.ArgumentTypeError(f"expected {least} to 1000000, got {excerpt(text)}")
        return value

    return parse


def _duration(text: str) -> float:
    from ..clock import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds, got {excerpt(text)}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {excerpt(text)}")
    return value


def db_target(args: argparse.Namespace) -> str:
    """The journal a command works on: --db, else $ORCHESTRATOR_DB, else ./orchestrator.db.

    As given: a file path, or a URL naming another backend.
    """
    if args.db is not None:
        return str(args.db)
    return os.environ.get("ORCHESTRATOR_DB") or "orchestrator.db"


def db_path(args: argparse.Namespace) -> Path:
    """The journal a command works on, as a path (once `journal_of` accepted it)."""
    return Path(db_target(args))


def journal_of(args: argparse.Namespace) -> JournalBackend:
    """The journal a command works on (`JournalBackendUnavailable` for an unknown kind)."""
    from ..journal import open_journal

    return open_journal(db_target(args))


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line, or raise `UsageError`."""
    from ..state import StateEncodingError, parse_payload

    try:
        return parse_payload(text)  # the bounds the journal keeps: depth, size, Unicode, ...
    except StateEncodingError as exc:
        shown = text if len(text) <= 80 else f"{text[:77]}..."
        raise UsageError(f"{what} is refused: {exc}: {shown}") from None


# -- commands ------------------------------------------------------------------------------


async def _cmd_run(args: argparse.Namespace) -> int:
    from ..folder.loader import LoadFailed, decode, read_file
    from ..pipeline.runner import run

    state = parse_json_object(args.state, "--state")
    try:
        source = decode(read_file(args.file))  # a FIFO is refused, not waited on
    except LoadFailed as exc:
        raise UsageError(f"cannot read {args.file}: {exc.message}") from None
    except FileNotFoundError:
        raise UsageError(f"no such file: {args.file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    if args.module_home is not None and not args.module_home.is_dir():
        raise UsageError(f"--module-home {args.module_home} is not a folder")
    try:
        final = await run(
            source, state, allow=args.allow, block=args.block, module_home=args.module_home
        )
    except PipelineError as exc:
        return _fail(f"{exc} [{exc.code}]", EXIT_FAILED, f"last good state: {_dumps(exc.state)}")
    _out(_dumps(final, indent=2))
    return EXIT_OK


def _cmd_try(args: argparse.Namespace) -> int:
    from ..errors import LoadError
    from .output import run_json, trial_text
    from .trying import try_file

    names, data = _trial_names(args.names)
    try:
        trial = _run(try_file(args.file, names, data, timeout=args.timeout))
    except LoadError as exc:
        raise UsageError(f"{exc} [{exc.code}]") from None
    info, ending, code = trial.info, *_verdict(trial, args.timeout)
    _out(run_json(info, trial.timeline) if args.json else trial_text(info, trial.timeline, ending))
    if trial.timed_out:  # its thread cannot be stopped, and would hold the exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _trial_names(values: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``[WORKFLOW] TRIGGER [JSON]``: the names, and the state (``{}`` if not given).

    An id is letters, digits, ``_``, ``.`` and ``-``: a last value that is not one is the
    JSON (so ``try FILE TRIGGER '{...}'`` and ``try FILE WORKFLOW TRIGGER`` both read).
    """
    import re

    if len(values) > 3:
        raise UsageError(f"try takes [WORKFLOW] TRIGGER [JSON], got {len(values)} values")
    names, text = values, "{}"
    if len(values) == 3 or (len(values) == 2 and not re.fullmatch(r"[\w.\-]+", values[-1])):
        names, text = values[:-1], values[-1]
    return names, parse_json_object(text, "the run's state")


def _verdict(trial: Any, timeout: float) -> tuple[list[str], int]:
    """The lines after the timeline, and the exit code."""
    from .trying import waiting_for

    info = trial.info
    at = f" at step {info.step}" if info.step else ""
    if trial.timed_out:
        return [f"still {info.status}{at} after {timeout:g} s: stopped (see --timeout)"], 1
    if info.status == "completed":
        return ["completed"], EXIT_OK
    if info.status == "paused":
        within = f" in step {info.step}" if info.step else ""
        return [
            f"paused{within}, waiting for {waiting_for(trial.timeline)}",
            "try stops here: nothing can resume a run on its throwaway journal",
        ], EXIT_OK
    code = f" [{info.error_code}]" if info.error_code else ""
    return [f"{info.status}{at}: {info.error or 'no error recorded'}{code}"], EXIT_FAILED


async def _cmd_runs(args: argparse.Namespace) -> int:
    from ..clock import Clock
    from . import output

    # Whole microseconds back from now; a window past the epoch means every run.
    since = None if args.since is None else max(0, Clock().now_us() - int(args.since * 1e6))
    async with _reading(journal_of(args)) as reader:
        runs = (
            []
            if reader is None
            else await reader.list_runs(
                status=args.status,
                workflow=args.workflow,
                limit=args.limit,
                created_since=since,
            )
        )
    _out(output.runs_json(runs) if args.json else output.runs_table(runs))
    return EXIT_OK


async def _cmd_show(args: argparse.Namespace) -> int:
    from . import output

    journal = journal_of(args)
    async with _reading(journal) as reader:
        if reader is None:
            raise UsageError(f"no run {args.run_id!r}: journal {journal.location} does not exist")
        found = await reader.match_runs(args.run_id, limit=SHOWN)
        run_id = resolved(args.run_id, found, journal.location)
        info = await reader.get_run(run_id)
        timeline = await reader.timeline(run_id) if info is not None else None
        children = await reader.children(run_id)
        statuses = {} if args.json else await _statuses(reader, children)
    if info is None or timeline is None:  # pruned meanwhile
        raise RunNotFound(f"no run {run_id!r} in journal {journal.location}")
    if args.json:
        _out(output.run_json(info, timeline, children))
    else:
        _out(output.run_text(info, timeline, [(c, statuses.get(c)) for c in children]))
    return EXIT_OK


def _cmd_logs(args: argparse.Namespace) -> int:
    from .logs import print_logs

    work = print_logs(
        journal_of(args),
        args.run_id,
        follow=args.follow,
        limit=args.limit,
        out=_out,
        as_json=args.json,
    )
    with contextlib.suppress(KeyboardInterrupt):  # how `-f` is meant to end
        _run(work)
    return EXIT_OK


async def _statuses(reader: JournalQueries, run_ids: list[str]) -> dict[str, str]:
    """The status of each run of `run_ids` the journal has (a run's children)."""
    outcomes = await reader.outcomes(run_ids)
    return {run_id: str(outcome.status) for run_id, outcome in outcomes.items()}


def _cmd_emit(args: argparse.Namespace) -> int:
    data = parse_json_object(args.data, "the event data")
    if not args.type.strip():
        raise UsageError("the event type must not be empty")
    from ..clock import new_id

    key = _key(args)
    journal = journal_of(args)
    fresh = new_id()
    event_id = journal.commands.emit_event(args.type, data, key=key, event_id=fresh)
    reused_key = key if event_id != fresh else None  # an earlier event holds the key
    if not args.json:  # the id first: a script reading stdout has it before the report
        _out(event_id)
        sys.stdout.flush()
    found = _emit_report(journal.commands, event_id, args, reused_key)
    # The report read the lease already: no second read for the note.
    live = None if isinstance(found, str) else found.daemon
    _note_if_no_daemon(journal, "the event", live=live)
    _print_emit_report(found, event_id, args, reused=reused_key is not None)
    return EXIT_OK


def _note_if_no_daemon(journal: JournalBackend, waiting: str, *, live: bool | None = None) -> None:
    """After a write: one line on stderr if no daemon holds the journal (and where one runs).

    `live`: whether a daemon holds it, when the caller knows (else the lease is read).
    """
    from .daemons import no_daemon_note
    from .output import escape

    if live is None:
        try:
            live = journal.commands.daemon() is not None
        except JournalError:  # the write went through; the note is only a help
            return
    if not live:
        print(escape(no_daemon_note(journal.location, journal.identity, waiting)), file=sys.stderr)


def _emit_report(
    commands: JournalCommands, event_id: str, args: argparse.Namespace, reused_key: str | None
) -> EmitReport | str:
    """What the event started, resumed or buffered; else why the journal cannot tell."""
    from .emitting import ROUTING_WAIT, report

    wait = 0.0 if args.no_wait else ROUTING_WAIT
    try:
        return report(commands, event_id, args.type, wait=wait, reused_key=reused_key)
    except JournalError as exc:  # the event is journaled: only the report failed
        return str(exc)


def _print_emit_report(
    found: EmitReport | str, event_id: str, args: argparse.Namespace, *, reused: bool
) -> None:
    """The report on stderr (stdout with --json)."""
    from .output import escape

    if isinstance(found, str):
        if args.json:
            _out(json.dumps({"event_id": event_id, "routed": False, "reused": reused}))
        print(escape(f"note: cannot tell what routing did with it: {found}"), file=sys.stderr)
        return
    if args.json:
        _out(json.dumps(found.document(), ensure_ascii=False, sort_keys=True))
        return
    for line in found.lines():
        print(escape(line), file=sys.stderr)


def _key(args: argparse.Namespace) -> str | None:
    """The ``--key`` given, checked (a `ValidationError` is a usage error), or None."""
    from ..journal import ops

    return None if args.key is None else ops.checked_key(args.key)


def _cmd_prune(args: argparse.Namespace) -> int:
    from ..clock import Clock
    from ..journal.retention import cutoffs_for

    journal = journal_of(args)
    if not journal.exists():
        raise UsageError(f"no journal at {journal.location}; nothing to prune")
    if args.vacuum and not args.dry_run and journal.commands.make_vacuumable():
        print("converted the journal to give space back (a one-time VACUUM)", file=sys.stderr)
    cutoffs, events = cutoffs_for(Clock().now_us(), args.older_than, args.status)
    counts = journal.commands.prune(cutoffs, events_before=events, dry_run=args.dry_run)
    if not args.dry_run and any(counts.values()):
        counts["pages_freed"] = journal.commands.vacuum()
    if args.json:
        _out(json.dumps({"dry_run": args.dry_run, **counts}, sort_keys=True))
        return EXIT_OK
    verb = "would prune" if args.dry_run else "pruned"
    rest = ", ".join(f"{name} {n}" for name, n in counts.items() if name not in ("runs", "events"))
    _out(f"{verb} {counts['runs']} runs and {counts['events']} events ({rest})")
    return EXIT_OK


def _cmd_resume(args: argparse.Namespace) -> int:
    return _queue(args, "resume", parse_json_object(args.patch, "the patch"))


def _cmd_signal(args: argparse.Namespace) -> int:
    return _queue(args, "signal", parse_json_object(args.patch, "the patch"))


def _cmd_abort(args: argparse.Namespace) -> int:
    return _queue(args, "abort", None)


def _cmd_retry(args: argparse.Namespace) -> int:
    return _queue(args, "retry", parse_json_object(args.patch, "the patch") or None)


def _cmd_fork(args: argparse.Namespace) -> int:
    patch = parse_json_object(args.patch, "the patch")
    journal = journal_of(args)
    run_id = _resolve(journal, args.run_id)
    # Chosen as the command is written: the daemon creates the run under this id.
    _out(journal.commands.queue_fork(run_id, args.from_step, patch))
    _note_if_no_daemon(journal, "the fork")
    return EXIT_OK


def _cmd_disable(args: argparse.Namespace) -> int:
    return _switch(args, "disable")


def _cmd_enable(args: argparse.Namespace) -> int:
    return _switch(args, "enable")


def _switch(args: argparse.Namespace, command: str) -> int:
    from ..errors import TriggerNotFound

    journal = journal_of(args)
    try:
        journal.commands.queue_switch(command, args.workflow, args.trigger)
    except TriggerNotFound as exc:
        raise UsageError(str(exc)) from None
    what = f"workflow {args.workflow}"
    if args.trigger is not None:
        what = f"trigger {args.trigger} of {what}"
    _out(f"{command} of {what} queued; the daemon applies it")
    _note_if_no_daemon(journal, f"the {command}")
    return EXIT_OK


def _queue(args: argparse.Namespace, command: str, payload: Any) -> int:
    journal = journal_of(args)
    run_id = _resolve(journal, args.run_id)
    if command == "abort" and journal.commands.abort_unapplied(run_id):
        _out(f"run {run_id} aborted (no daemon had started it)")
        return EXIT_OK
    journal.commands.queue_command(command, run_id, payload)
    _out(f"{command} of run {run_id} queued; the daemon applies it")
    _note_if_no_daemon(journal, f"the {command}")
    return EXIT_OK


def _resolve(journal: JournalBackend, text: str) -> str:
    """The whole run id `text` names (the inbox holds whole run ids only)."""
    found = journal.commands.match_runs(text, limit=SHOWN)
    return resolved(text, found, journal.location)


async def _cmd_up(args: argparse.Namespace) -> int:
    from ..folder.names import is_text, shown

    if not args.folder.is_dir():
        raise UsageError(f"{shown(args.folder)} is not a folder of workflow files")
    if not is_text(str(args.folder.resolve())):  # the watcher takes UTF-8 paths only
        raise UsageError(
            f"the folder {shown(args.folder.resolve())} has a path that is not valid UTF-8, "
            "so it cannot be watched; rename it (or the folder it is in)"
        )
    from .daemons import register

    # A backend that is not available is bad input, before logging starts; so is a folder
    # another daemon runs on another journal.
    journal = journal_of(args)
    with register(args.folder, journal.identity) as registration:
        return await _serve(args, registration)


async def _serve(args: argparse.Namespace, registration: Registration) -> int:
    from ..journal.backends import is_postgres_url
    from .daemon import DaemonSettings, configure_logging, serve, show_standby

    db = db_target(args)
    dashboard = not args.headless and sys.stdin.isatty() and sys.stdout.isatty()
    # Beside a journal file; for a server's journal, in the current folder (never a URL).
    log_name = DAEMON_LOG if is_postgres_url(db) else f"{db}.log"
    log_file = Path(log_name) if dashboard else None
    try:
        configure_logging(log_file)
    except OSError as exc:  # the journal's folder is missing or not writable
        raise UsageError(
            f"cannot write the daemon's log {log_file}: {exc.strerror} (its folder must exist "
            "and be writable)"
        ) from None
    if log_file is not None:
        print(f"orchestrator: the daemon logs to {log_file} while the dashboard runs")
        show_standby()  # the terminal stays blank until the dashboard: say why
    registration.report()
    settings = DaemonSettings(
        grace=args.grace,
        max_recoveries=args.max_recoveries,
        isolate=not args.no_isolate,
        workers=args.workers,
        run_segments=not args.no_run_segments,
    )
    leaving = registration.close  # also before an exit at once (steps that linger)
    if not dashboard:
        return await serve(args.folder, db, settings, leaving=leaving)
    from .dashboard import in_daemon  # only `up` on a terminal needs Textual

    return await serve(args.folder, db, settings, foreground=in_daemon(Path(db)), leaving=leaving)


def _cmd_tui(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the dashboard needs a terminal; use `orchestrator runs` in scripts")
    from .dashboard import show

    journal_of(args)  # a backend that is not available is bad input, before Textual starts
    show(db_path(args), read_only=args.read_only)
    return EXIT_OK


def _cmd_invoke(args: argparse.Namespace) -> int:
    journal = journal_of(args)
    data, key = parse_json_object(args.data, "the run's state"), _key(args)
    if journal.exists():
        _run(_check_invocable(journal, args.workflow, args.trigger))
    run_id = journal.commands.queue_invoke(args.workflow, args.trigger, data, key=key)
    _out(run_id)
    sys.stdout.flush()
    if not args.wait:  # with --wait, `wait_for_run` says so within seconds
        _note_if_no_daemon(journal, "the run")
        return EXIT_OK
    from .invoking import wait_for_run
    from .output import escape

    outcome = _run(wait_for_run(journal, run_id))
    print(escape(outcome.message), file=sys.stderr)
    if outcome.state is not None:  # stdout keeps the run id alone, for scripts
        shown = json.dumps(outcome.state, ensure_ascii=False, sort_keys=True)
        print(escape(f"state {shown}"), file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_FAILED


async def _check_invocable(journal: JournalBackend, workflow_id: str, trigger_id: str) -> None:
    """With a ready daemon, an unknown workflow or trigger is bad input (exit 2).

    A disabled one (as the daemon applied it) is refused with `WorkflowDisabled` (exit 1).
    """
    from ..engine.switches import Switches
    from ..errors import WorkflowDisabled

    async with _reading(journal) as reader:
        daemon = await reader.daemon() if reader is not None else None
        loaded = await reader.workflows() if reader and daemon and daemon.ready else None
        switches = Switches(await reader.switches() if reader is not None else ())
    why = switches.why(workflow_id, trigger_id)
    if why is not None:
        raise WorkflowDisabled(f"run not queued: {why}")
    if loaded is None:
        return
    found = next((w for w in loaded if w.workflow_id == workflow_id), None)
    if found is None:
        known = ", ".join(w.workflow_id for w in loaded) or "none"
        raise UsageError(f"the daemon has no workflow {workflow_id!r} (loaded: {known})")
    triggers = [t["trigger_id"] for t in found.triggers]
    if trigger_id not in triggers:
        known = ", ".join(triggers)
        raise UsageError(
            f"workflow {workflow_id!r} has no trigger {trigger_id!r} (it has: {known})"
        )


async def _cmd_journal_migrate(args: argparse.Namespace) -> int:
    from ..journal.backends import migrate_journal

    done = await migrate_journal(db_target(args))
    if args.json:
        _out(_dumps({"journal": done.where, "before": done.before, "after": done.after}))
    elif done.before == done.after:
        _out(f"the journal ({done.where}) is up to date: schema {done.after}")
    else:
        _out(f"migrated the journal ({done.where}) from schema {done.before} to {done.after}")
    return 0


async def _cmd_journal_copy(args: argparse.Namespace) -> int:
    from ..journal.copy import copy_journal

    if args.db is not None:
        raise UsageError("journal copy names its journals as SRC and DST: leave --db out")
    done = await copy_journal(args.source, args.destination)
    if args.json:
        shown = {"source": done.source, "destination": done.destination, "rows": done.rows}
        _out(_dumps({**shown, "seconds": round(done.seconds, 3)}))
        return EXIT_OK
    from .output import escape

    total = sum(done.rows.values())
    _out(
        escape(
            f"copied {total} rows from {done.source} to {done.destination} in {done.seconds:.1f} s:"
        )
    )
    for table, rows in done.rows.items():
        _out(f"  {table:<18} {rows}")
    return EXIT_OK


async def _cmd_workflows(args: argparse.Namespace) -> int:
    from . import output

    async with _reading(journal_of(args)) as reader:
        if reader is None:
            loaded, errors, daemon, standbys = [], [], None, []
        else:
            loaded, errors, daemon, standbys = (
                await reader.workflows(),
                await reader.load_errors(),
                await reader.daemon(),
                await reader.standbys(),
            )
    render = output.workflows_json if args.json else output.workflows_text
    _out(render(loaded, errors, daemon, standbys))
    return EXIT_OK


@contextlib.asynccontextmanager
async def _reading(journal: JournalBackend) -> AsyncIterator[JournalQueries | None]:
    """The journal's reader, closed after the block; None if there is no journal yet."""
    if not journal.exists():
        yield None
        return
    reader = await journal.open_reader()
    try:
        yield reader
    finally:
        await reader.close()


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)

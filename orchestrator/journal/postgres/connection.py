"""Connecting to PostgreSQL: psycopg 3 loaded on demand, failures as `JournalError`s.

A URL may carry a password: no message, log or error repeats it. `describe` names the
host, port, database and user instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ...errors import (
    JournalBackendUnavailable,
    JournalError,
    JournalPathInvalid,
    JournalPermissionDenied,
    JournalUnreachable,
)

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "pip install 'durable-orchestrator[postgres]'"
CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise: an unreachable host never hangs
SCHEMA = "orchestrator"  # the journal's tables live in this schema of the database
NOTIFY_CHANNEL = "orchestrator"  # each writer commit ends with one pg_notify on it
STEP_JOBS_CHANNEL = "orchestrator_steps"  # each step job offered, answered or cancelled
RUN_TASKS_CHANNEL = "orchestrator_runs"  # each run task offered, patched, answered, cancelled
# SQLSTATE classes of a lost connection: connection exceptions, the server shutting down.
LOST_CLASSES = ("08", "57P")
# SQLSTATE classes of a value or row the server refuses for what a caller gave (not the
# journal's fault): data exceptions (too long, a bad encoding), integrity constraints (a
# unique key written twice), a program limit (an index entry too large). See `refused`.
REFUSED_CLASSES = ("22", "23", "54")
INSUFFICIENT_PRIVILEGE = "42501"  # the role lacks a right (a GRANT, CREATE on the database)
# What a role needs on a journal its owner migrated (docs/POSTGRES.md, "Roles").
GRANTS = (
    f"GRANT USAGE ON SCHEMA {SCHEMA} TO ROLE; "
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO ROLE; "
    f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO ROLE"
)

# The journal's advisory lock keys, "ORCH" and a number: each serializes one kind of write
# among every process of every version, so a number is never reused for another kind.
MIGRATION_LOCK = 0x4F524348_00000001  # migrating the schema
DAEMONS_LOCK = 0x4F524348_00000002  # a daemon registering (fencing stale ones)
INBOX_LOCK = 0x4F524348_00000003  # a command writing an event or an inbox row, to its commit
RUN_IDS_LOCK = 0x4F524348_00000004  # a command writing a run row (it shared 2 at first)


def load_psycopg() -> Any:
    """The psycopg module, or `JournalBackendUnavailable` saying how to install it."""
    try:
        import psycopg
    except ImportError as exc:
        raise JournalBackendUnavailable(
            f"a PostgreSQL journal needs psycopg 3, which is not installed: {INSTALL_HINT}"
        ) from exc
    return psycopg


def parse_url(url: str) -> dict[str, str]:
    """The connection parameters of `url` (`JournalPathInvalid` if it is not a valid URL)."""
    pg = load_psycopg()
    try:
        params: dict[str, str] = pg.conninfo.conninfo_to_dict(url)
    except pg.ProgrammingError:
        raise JournalPathInvalid(
            "the journal's PostgreSQL URL is not valid; expected "
            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        ) from None
    return params


def describe(url: str) -> str:
    """Where `url` points, without its password: ``database D on HOST:PORT as USER``.

    What the URL leaves out is libpq's environment (``PGHOST``, ``PGPORT``, ...), as it
    connects: ``postgresql:///shop`` is named where it really goes.
    """
    params = {**_from_environment(), **parse_url(url)}
    host = params.get("host") or params.get("hostaddr") or "the local socket"
    port = params.get("port") or "5432"
    where = f"database {params.get('dbname') or '(the user name)'} on {host}:{port}"
    return f"{where} as {params['user']}" if params.get("user") else where


def _from_environment() -> dict[str, str]:
    """The connection parameters libpq reads from the environment, by parameter name."""
    names = {"PGHOST": "host", "PGHOSTADDR": "hostaddr", "PGPORT": "port"}
    names.update(PGDATABASE="dbname", PGUSER="user")
    return {param: os.environ[var] for var, param in names.items() if os.environ.get(var)}


# A daemon's offer transaction names its session so while it holds the daemon's row
# (transaction-local): a standby cutting off a daemon frozen there ends it as it ends the
# frozen writer's (an idle-in-transaction timeout does not, after a pipelined statement).
OFFERING_NAME = "orchestrator-offering-{daemon}"


async def connect(url: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    """An async connection to `url` (`JournalUnreachable` if it cannot be made)."""
    pg = load_psycopg()
    params = parse_url(url)
    try:
        conn: psycopg.AsyncConnection[Any] = await pg.AsyncConnection.connect(
            url, autocommit=autocommit, **connect_options(params)
        )
    except pg.OperationalError as exc:
        raise unreachable(url, params, exc) from None
    return conn


def connect_options(params: dict[str, str]) -> dict[str, Any]:
    """What every connection adds to its URL: a connect timeout, the journal's schema first.

    The URL's own ``connect_timeout`` wins. Its ``options`` (a ``statement_timeout``, say)
    are kept, the journal's ``search_path`` after them: without it no table is found.
    """
    extra: dict[str, Any] = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = CONNECT_TIMEOUT
    ours = f"-c search_path={SCHEMA},pg_catalog"
    extra["options"] = f"{params['options']} {ours}" if params.get("options") else ours
    return extra


def unreachable(url: str, params: dict[str, str], exc: BaseException) -> JournalUnreachable:
    """The error for a connection to `url` that failed with `exc`, the password masked."""
    why = reason(exc)
    password = params.get("password")
    if password:
        why = why.replace(password, "***")
    return JournalUnreachable(
        f"cannot connect to the PostgreSQL journal ({describe(url)}): {why}; "
        "check that the server runs and the URL (--db or $ORCHESTRATOR_DB) is right"
    )


def denied(location: str, doing: str, exc: BaseException) -> JournalPermissionDenied | None:
    """The error of `doing` refused for want of a right (SQLSTATE 42501), else None."""
    if getattr(exc, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
        return None
    return JournalPermissionDenied(
        f"journal {location}: {doing} failed: {reason(exc)}; the role in the URL lacks a right"
        f" on the journal: its owner may grant it what daemons and commands need: {GRANTS}"
    )


def reason(exc: BaseException) -> str:
    """`exc`'s message on one line (its type's name if it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def refused(exc: BaseException) -> bool:
    """Whether the server refused `exc`'s statement for a caller's value (`REFUSED_CLASSES`).

    Written again, it would be refused again: the caller is told, nothing is retried.
    """
    return (getattr(exc, "sqlstate", None) or "").startswith(REFUSED_CLASSES)


def lost(exc: BaseException, conn: psycopg.AsyncConnection[Any] | None) -> bool:
    """Whether `exc`, raised on `conn`, means the connection is gone (not the statement)."""
    state = getattr(exc, "sqlstate", None) or ""
    return conn is None or conn.closed or conn.broken or state.startswith(LOST_CLASSES)


def failed(
    location: str, doing: str, exc: BaseException, conn: psycopg.AsyncConnection[Any] | None
) -> JournalError:
    """The error of `doing` on the journal at `location` failing with `exc` on `conn`.

    A lost connection is `JournalUnreachable`, any other failure a `JournalError`.
    """
    refused = denied(location, doing, exc)
    if refused is not None:
        return refused
    message = f"journal {location}: {doing} failed: {reason(exc)}"
    return JournalUnreachable(message) if lost(exc, conn) else JournalError(message)

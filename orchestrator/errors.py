"""The one error hierarchy of the orchestrator.

Every error the package raises on purpose is an `OrchestratorError` with a stable `code`
that scripts and the CLI can rely on. Foreign exceptions (sqlite3, OSError, a step's own
exception) are translated at the boundary with ``raise ... from exc``::

    OrchestratorError                      ORCHESTRATOR_ERROR
    ├── ValidationError                    VALIDATION_ERROR
    │   └── StepNotFound                   STEP_NOT_FOUND
    ├── DefinitionError                    INVALID_DEFINITION
    │   ├── DuplicateKey                   DUPLICATE_KEY
    │   └── LoadError                      LOAD_FAILED
    ├── PipelineError                      PIPELINE_ERROR
    │   ├── StepTimeout                    STEP_TIMEOUT
    │   └── InvalidState                   INVALID_STATE
    ├── WorkflowNotFound                   WORKFLOW_NOT_FOUND
    ├── TriggerNotFound                    TRIGGER_NOT_FOUND
    ├── WorkflowDisabled                   DISABLED
    ├── RunNotFound                        RUN_NOT_FOUND
    ├── RunNotActive                       RUN_NOT_ACTIVE
    ├── WorkflowBusy                       WORKFLOW_BUSY
    ├── ServiceNotFound                    SERVICE_NOT_FOUND
    ├── ServiceError                       SERVICE_FAILED
    ├── RuntimeNotStarted                  RUNTIME_NOT_STARTED
    ├── RuntimeStopped                     RUNTIME_STOPPED
    └── JournalError                       JOURNAL_ERROR
        ├── JournalLocked                  JOURNAL_LOCKED
        ├── JournalCorrupt                 JOURNAL_CORRUPT
        ├── JournalNotPrivate              JOURNAL_NOT_PRIVATE
        ├── JournalPermissionDenied        JOURNAL_PERMISSION_DENIED
        ├── JournalPathInvalid             JOURNAL_PATH_INVALID
        ├── JournalBackendUnavailable      JOURNAL_BACKEND_UNAVAILABLE
        └── JournalUnreachable             JOURNAL_UNREACHABLE
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any, ClassVar


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises on purpose."""

    code: ClassVar[str] = "ORCHESTRATOR_ERROR"


class ValidationError(OrchestratorError):
    """Pipeline source text broke the import policy, or could not be parsed."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, *, module: str | None = None, line: int | None = None):
        super().__init__(message)
        self.module = module
        self.line = line


class StepNotFound(ValidationError):
    """A step name that the workflow's pipeline does not have (now, on its current version).

    Raised by `fork` for a ``from_step`` it does not know, and by `retry` when the step a
    run failed at is gone from the workflow's current version; the message lists the steps.
    """

    code = "STEP_NOT_FOUND"

    @classmethod
    def unknown(
        cls, step: str, workflow_id: str, trigger_id: str, steps: list[str]
    ) -> StepNotFound:
        """A step the pipeline does not have, with the steps it has."""
        known = ", ".join(repr(name) for name in steps) or "none"
        return cls(
            f"workflow {workflow_id!r} (trigger {trigger_id!r}) has no step {step!r}; "
            f"its steps: {known}"
        )


class DefinitionError(OrchestratorError):
    """A workflow, step or service definition is invalid."""

    code = "INVALID_DEFINITION"


class DuplicateKey(DefinitionError):
    """An id is defined twice, or a reserved id is defined at all."""

    code = "DUPLICATE_KEY"


class LoadError(DefinitionError):
    """A workflow file did not load: the error the daemon would report for it.

    Attributes:
        path: The file.
        line: The line the error points at, when known.
        reason: Why, without the location.
    """

    code = "LOAD_FAILED"

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class PipelineError(OrchestratorError):
    """A step failed; no later step ran.

    Attributes:
        step_index: Position of the failing step in its pipeline (0-based).
        step_name: Name of the failing step.
        state: The last good state, as the previous step returned it.
    """

    code = "PIPELINE_ERROR"

    def __init__(
        self,
        message: str,
        *,
        step_index: int,
        step_name: str,
        state: dict[str, Any],
    ):
        super().__init__(message)
        self.step_index = step_index
        self.step_name = step_name
        self.state = state


class StepTimeout(PipelineError):
    """A step ran longer than its `timeout`."""

    code = "STEP_TIMEOUT"


class InvalidState(PipelineError):
    """A step returned something that is not a JSON object."""

    code = "INVALID_STATE"


class WorkflowNotFound(OrchestratorError):
    """No workflow with that id is registered."""

    code = "WORKFLOW_NOT_FOUND"


class TriggerNotFound(OrchestratorError):
    """The workflow has no trigger (pipeline) with that id."""

    code = "TRIGGER_NOT_FOUND"


class WorkflowDisabled(OrchestratorError):
    """The workflow, or the trigger invoked, is disabled (`Runtime.disable`): no run starts."""

    code = "DISABLED"


class RunNotFound(OrchestratorError):
    """No run with that id is in the journal."""

    code = "RUN_NOT_FOUND"


class RunNotActive(OrchestratorError):
    """The run is in a status that does not allow the action (for example, it is final)."""

    code = "RUN_NOT_ACTIVE"


class WorkflowBusy(OrchestratorError):
    """The workflow's mode refused a retried run now (it would drop, reject or signal it).

    The run keeps its status; retry it once the workflow is free.
    """

    code = "WORKFLOW_BUSY"


class ServiceNotFound(OrchestratorError):
    """No service with that id is available in the scope that asked for it."""

    code = "SERVICE_NOT_FOUND"


class ServiceError(OrchestratorError):
    """A service could not be provided: its factory raised (chained), or its scope is closed.

    Attributes:
        service: The id of the service.
    """

    code = "SERVICE_FAILED"

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class RuntimeNotStarted(OrchestratorError):
    """The runtime was used outside ``async with Runtime(...)`` (or after it stopped)."""

    code = "RUNTIME_NOT_STARTED"


class RuntimeStopped(OrchestratorError):
    """The runtime stopped before the run finished.

    The run continues from its last checkpoint when a runtime next opens the journal.
    """

    code = "RUNTIME_STOPPED"


class JournalError(OrchestratorError):
    """The journal could not be read or written."""

    code = "JOURNAL_ERROR"


class JournalLocked(JournalError):
    """Another live process holds the journal's lease."""

    code = "JOURNAL_LOCKED"


class JournalCorrupt(JournalError):
    """The file is not a journal of this orchestrator, or it is damaged."""

    code = "JOURNAL_CORRUPT"


class JournalNotPrivate(JournalError):
    """A journal file (or its -wal, -shm, or the daemon's log) is not private to its user.

    Another user owns it, or its group or others may read or write it: they could read
    the runs or write events the daemon would run. Like ssh with a loose key, the journal
    is refused rather than adopted; the message says which ``chmod`` or ``chown`` fixes it.
    """

    code = "JOURNAL_NOT_PRIVATE"


class JournalPermissionDenied(JournalError):
    """This process may not read or write the journal: the file, or the folder SQLite needs.

    SQLite keeps ``-wal`` and ``-shm`` files beside the journal, so its folder must be
    writable too, or the file system is read-only.
    """

    code = "JOURNAL_PERMISSION_DENIED"


class JournalPathInvalid(JournalError):
    """The journal's path cannot hold a journal: a directory, or a folder that does not exist."""

    code = "JOURNAL_PATH_INVALID"


class JournalBackendUnavailable(JournalError):
    """The journal's ``db`` names a backend this orchestrator cannot open (yet)."""

    code = "JOURNAL_BACKEND_UNAVAILABLE"


class JournalUnreachable(JournalError):
    """The journal's database server cannot be reached or refused the connection.

    The message names the host, port, database and user, never the password.
    """

    code = "JOURNAL_UNREACHABLE"


class RemoteError(Exception):
    """What step code raised in another process (a worker), carried back as text."""

    def __init__(self, type_name: str, message: str, trace: str) -> None:
        super().__init__(message)
        self.type_name, self.message, self.trace = type_name, message, trace


def describe_exception(exc: BaseException) -> str:
    """One line naming the exception's type and message (where it was raised)."""
    name = exc.type_name if isinstance(exc, RemoteError) else type(exc).__name__
    try:
        text = str(exc)
    except Exception as failed:  # noqa: BLE001 - user code: its run must still fail clearly
        text = f"<its str() raised {type(failed).__name__}>"
    return f"{name}: {text}" if text else name


TRACEBACK_LIMIT = 8 * 1024  # characters of a journaled traceback: its head and its tail
_PACKAGE = str(Path(__file__).resolve().parent)
# The machinery a step runs under: asyncio, a thread pool, the orchestrator's own frames.
_MACHINERY = tuple(
    str(Path(path).resolve().parent)
    for path in (
        sys.modules["asyncio"].__file__ if "asyncio" in sys.modules else None,
        sys.modules["concurrent.futures"].__file__ if "concurrent.futures" in sys.modules else None,
    )
    if path
)


def _is_machinery(filename: str) -> bool:
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    return any(
        resolved == root or resolved.startswith(root + "/") for root in (_PACKAGE, *_MACHINERY)
    ) or resolved.endswith(("/threading.py", "/contextvars.py"))


def format_traceback(exc: BaseException, limit: int = TRACEBACK_LIMIT) -> str:
    """`exc`'s traceback as the user needs it: their frames only, at most `limit` characters.

    Each frame names its file, line, function and source line; the orchestrator's own
    frames (and asyncio's, a thread pool's) are cut, in chained exceptions too. What a
    worker process raised (`RemoteError`) keeps the text it sent, cut there already.
    A longer text keeps its head and its tail. Not redacted: redact before journaling.
    """
    if isinstance(exc, RemoteError):
        return bound_text(exc.trace, limit)
    try:
        summary = traceback.TracebackException.from_exception(exc, capture_locals=False)
        seen: set[int] = set()
        pending: list[traceback.TracebackException | None] = [summary]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            kept = [frame for frame in current.stack if not _is_machinery(frame.filename)]
            current.stack = traceback.StackSummary.from_list(kept)
            pending += [current.__cause__, current.__context__]
        text = "".join(summary.format())
    except Exception:  # noqa: BLE001 - a broken exception still fails only its step
        text = describe_exception(exc)
    return bound_text(text, limit)


def bound_text(text: str, limit: int = TRACEBACK_LIMIT) -> str:
    """`text` if it is at most `limit` characters, else its head and tail with a mark between."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head - 64
    cut = len(text) - head - tail
    return f"{text[:head]}\n... ({cut} characters cut) ...\n{text[-tail:]}"


def raise_if_cancelled(exc: BaseException) -> None:
    """Propagate the current task's own cancellation; return if `exc` is user code's failure.

    Where everything user code raises is caught (steps, hooks, service factories), this
    comes first: a `CancelledError` the user code raised itself is its failure like any
    other, but a cancellation the task received (an abort, a timeout, shutdown) must
    propagate, even when the user code turned it into another exception.

    Raises:
        asyncio.CancelledError: The current task is being cancelled.
    """
    import asyncio  # here: the CLI's writing commands never load asyncio

    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: nothing to cancel
        return
    if task is None or task.cancelling() == 0:
        return
    if isinstance(exc, asyncio.CancelledError):
        raise exc
    raise asyncio.CancelledError from exc

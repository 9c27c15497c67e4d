"""What a coordinator and an executor tell each other about a run segment (`run_tasks`).

The request (a JSON object; the state travels beside it as text): the workflow and
trigger, where the run is (`step_index`, `position`), and what recovery noted about it.
The reply: where the run got to (`progress`: position, step index, state) and one of

- ``end``: how it ended (status, error, code, the step it failed in, a traceback);
- ``pause``: the `PauseRequest` its last step returned, with that step's checkpoint (and
  outbox) as writes it `carried`, uncommitted: the coordinator commits them with the
  pause, as a run pausing here does, so an executor lost before its reply loses the step
  (it runs again), never the pause;
- ``aborted``: it stopped on an abort the coordinator sent (its signals: `patches`);
- ``back``: it needs what only the coordinator has (a step registered a wait ahead with
  ``ctx.pause_service``): it continues there, from `progress`, that step run again.

A reply is checked as it is read: a row something else wrote is `Unreadable`, and the
coordinator treats it as the loss of its executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...define.waits import PauseRequest
from ...journal import ops
from ...records import RunCode, RunStatus
from ...state import parse_payload
from ..executor import ActiveRun, Finished
from ..workers.jobs import checked_pause
from ..workers.wire import pause_to_json

# Patches (`RunTasks.patch`) an executor takes: signals by sequence number, an abort.
SIGNAL_PREFIX = "signal:"
ABORT = "abort"


class Unreadable(ValueError):
    """A reply no executor could have written."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a segment left its run: its next step, its checkpoint count, its state."""

    step_index: int
    position: int
    state: str

    def apply(self, run: ActiveRun) -> None:
        """Move the coordinator's copy of `run` to where its executor left it."""
        run.step_index, run.position, run.state_text = self.step_index, self.position, self.state


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply as read: its progress and what the segment came to."""

    progress: Progress
    outcome: Finished | PauseRequest | None  # None: aborted or handed back (`back`)
    back: bool = False  # handed back: it continues on the coordinator
    signals: int = 0  # the highest signal number merged into its state
    coordinator: bool = False  # handed back for good: its workflow's steps need the coordinator
    carried: list[ops.Op] | None = None  # a pausing step's writes, to commit with its pause


def request_of(run: ActiveRun) -> dict[str, Any]:
    """What an executor needs to rebuild `run` (with its state, offered beside it)."""
    return {
        "workflow": run.workflow.id,
        "trigger": run.trigger_id,
        "step_index": run.step_index,
        "position": run.position,
        "commit_next": run.commit_next_checkpoint,
        "recovered_at": None if run.recovered_at is None else list(run.recovered_at),
    }


def progress_of(run: ActiveRun) -> dict[str, Any]:
    """Where `run` is now, as a reply says it."""
    return {"step_index": run.step_index, "position": run.position, "state": run.state_text}


def end_reply(run: ActiveRun, finished: Finished, signals: int) -> dict[str, Any]:
    """The reply of a segment that ended its run."""
    end = {
        "status": str(finished.status),
        "error": finished.error,
        "code": None if finished.code is None else str(finished.code),
        "step": finished.step,
        "trace": finished.trace,
    }
    return {"progress": progress_of(run), "end": end, "signals": signals}


def pause_reply(
    run: ActiveRun, pause: PauseRequest, signals: int, carried: list[ops.Op] | None
) -> dict[str, Any]:
    """The reply of a segment whose last step asked to pause (`carried`: its writes)."""
    reply = {"progress": progress_of(run), "pause": pause_to_json(pause), "signals": signals}
    if carried is not None:
        reply["carried"] = [[stmt.name, list(params)] for stmt, params in carried]
    return reply


def stopped_reply(
    run: ActiveRun, *, back: bool, signals: int, coordinator: bool = False
) -> dict[str, Any]:
    """The reply of a segment aborted, or handed back (`back`) to the coordinator.

    `coordinator`: a step needed the coordinator (its workflow's runs stay there).
    """
    key = "back" if back else "aborted"
    reply = {"progress": progress_of(run), key: True, "signals": signals}
    if coordinator:
        reply["coordinator"] = True
    return reply


def read_reply(value: dict[str, Any]) -> Reply:
    """A reply as the coordinator acts on it.

    Raises:
        Unreadable: Not a reply an executor writes.
    """
    try:
        progress = _progress(value["progress"])
        signals = int(value.get("signals") or 0)
        if "end" in value:
            return Reply(progress, _finished(value["end"]), signals=signals)
        if "pause" in value:
            carried = _carried(value.get("carried"))
            return Reply(progress, checked_pause(value["pause"]), signals=signals, carried=carried)
        if value.get("aborted") is True:
            return Reply(progress, None, signals=signals)
        if value.get("back") is True:
            needs = value.get("coordinator") is True
            return Reply(progress, None, back=True, signals=signals, coordinator=needs)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Unreadable(f"a run task's reply cannot be read ({exc!r})") from None
    raise Unreadable(f"a run task's reply has no outcome ({sorted(value)})")


def _progress(value: Any) -> Progress:
    step_index, position, state = value["step_index"], value["position"], value["state"]
    if not (isinstance(step_index, int) and isinstance(position, int) and step_index >= 0):
        raise ValueError("a progress without a step index and a position")
    if not isinstance(state, str):
        raise ValueError("a progress without a state")
    parse_payload(state)  # journaled as it is: a row something else wrote is checked
    return Progress(step_index, position, state)


# What a pausing step's checkpoint is made of (`ops.checkpoint` and its outbox's writes).
_CARRIED = frozenset(
    {
        ops.Stmt.INSERT_CHECKPOINT,
        ops.Stmt.SET_PROGRESS,
        ops.Stmt.CLAIM_KEY,
        ops.Stmt.OUTBOX_INVOKE,
        ops.Stmt.OUTBOX_EVENT,
        ops.Stmt.ADD_CHILD,
    }
)


def _carried(value: Any) -> list[ops.Op] | None:
    """A pausing step's writes as an executor sent them; None if it committed them itself."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("a pause's writes that are not a list")
    carried: list[ops.Op] = []
    for name, params in value:
        stmt = ops.Stmt[name]
        if stmt not in _CARRIED or not isinstance(params, list):
            raise ValueError(f"a pause cannot carry {name!r}")
        if not all(p is None or isinstance(p, int | str) for p in params):
            raise ValueError(f"a write {name!r} with values that are not plain")
        carried.append((stmt, tuple(params)))
    return carried


def _finished(value: Any) -> Finished:
    status = RunStatus(value["status"])
    if status not in (RunStatus.COMPLETED, RunStatus.FAILED):
        raise ValueError(f"a segment cannot end its run {status}")
    code = None if value["code"] is None else RunCode(value["code"])
    return Finished(
        status, _text(value["error"]), code, _text(value["step"]), _text(value["trace"])
    )


def _text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"not text: {value!r}")
    return value

"""``orchestrator try``: one trigger of a workflow file, once, on a journal thrown away.

For a file not yet in the daemon's folder: it loads as the daemon would load it (probed,
the same errors with file and line), then one run of one pipeline starts with the JSON
given, in this process, on a temporary journal and a clock that does not move. The run
goes until it completes, fails or pauses; a pause (an event, a sleep, a timeout) is where
the trial stops, since nothing else could ever resume it. Nothing touches ``--db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..clock import to_datetime
from ..harness import Harness, harness
from ..records import RunInfo, TimelineEntry
from .arguments import UsageError

MAX_FILE_BYTES = 8 * 1024 * 1024  # more is not a workflow file: refused before it is parsed
AFTER_SECONDS = 5.0  # what the run's end set off (hooks, alerts) may take before the report


@dataclass(frozen=True)
class Trial:
    """How the run went: the run, its timeline, and whether it outlived its time limit."""

    info: RunInfo
    timeline: list[TimelineEntry]
    timed_out: bool = False


async def try_file(
    path: Path,
    names: list[str],
    data: dict[str, Any],
    *,
    timeout: float,  # noqa: ASYNC109 - a bound in real time
) -> Trial:
    """Run one pipeline of the file once; `UsageError` for a wrong workflow or trigger.

    `names` is ``[TRIGGER]`` or ``[WORKFLOW, TRIGGER]``.

    Raises:
        LoadError: The file did not load (what the daemon would report).
    """
    _check_file(path)
    async with harness(
        path, env=os.environ, start=datetime.now(UTC), probe=True, timeout=timeout, grace=0
    ) as h:
        workflow_id, trigger_id = _pick(h, names, path)
        started = asyncio.ensure_future(h.runtime.invoke(workflow_id, trigger_id, data))
        done, _ = await asyncio.wait([started], timeout=timeout)
        if not done:
            started.cancel()  # the wait only: the run stays, still running
            return await _outcome(h, workflow_id, timed_out=True)
        result = started.result()
        with contextlib.suppress(TimeoutError):  # a hook still runs: the run has ended
            await h.runtime.idle(AFTER_SECONDS)
        info = await h.run(result.run_id)
        return Trial(info, await h.timeline(info.run_id))


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if not path.is_file():
        raise UsageError(f"{path} is not a file; try takes one workflow file")
    if size > MAX_FILE_BYTES:
        raise UsageError(
            f"{path} has {size} bytes, more than a workflow file has "
            f"(at most {MAX_FILE_BYTES // (1024 * 1024)} MiB)"
        )


def _pick(h: Harness, names: list[str], path: Path) -> tuple[str, str]:
    """The workflow and the trigger `names` mean, among what the file defines."""
    loaded = h.workflows
    if len(names) == 2:
        workflow_id, trigger_id = names
        if workflow_id not in loaded:
            raise UsageError(
                f"{path.name} has no workflow {workflow_id!r} (it has: {', '.join(loaded)})"
            )
    else:
        (trigger_id,) = names
        having = [w for w in loaded if trigger_id in _pipelines(h, w)]
        if len(having) > 1:
            raise UsageError(
                f"{path.name}: trigger {trigger_id!r} is in workflows {', '.join(having)}; "
                "name the workflow: try FILE WORKFLOW TRIGGER"
            )
        if not having and len(loaded) > 1:
            known = "; ".join(f"{w}: {', '.join(_pipelines(h, w))}" for w in loaded)
            raise UsageError(f"{path.name} has no trigger {trigger_id!r} (it has {known})")
        workflow_id = having[0] if having else loaded[0]
    pipelines = _pipelines(h, workflow_id)
    if trigger_id not in pipelines:
        raise UsageError(
            f"workflow {workflow_id!r} has no trigger {trigger_id!r} "
            f"(it has: {', '.join(pipelines)})"
        )
    return workflow_id, trigger_id


def _pipelines(h: Harness, workflow_id: str) -> list[str]:
    return list(h.runtime.registry(workflow_id).workflow.pipelines)


async def _outcome(h: Harness, workflow_id: str, *, timed_out: bool) -> Trial:
    """The tried run: the workflow's first (the clock stood still: no schedule fired)."""
    runs = await h.runs(workflow_id)
    if not runs:
        raise UsageError(f"the run of {workflow_id!r} was never journaled")
    return Trial(runs[0], await h.timeline(runs[0].run_id), timed_out=timed_out)


def waiting_for(timeline: list[TimelineEntry]) -> str:
    """What a paused run waits for, from its last ``run.paused`` entry."""
    paused = [entry for entry in timeline if entry.kind == "run.paused"]
    entry = paused[-1] if paused else None
    message = (entry.message if entry else None) or "waiting for a resume"
    until = (entry.data or {}).get("timeout_at") if entry else None
    when = to_datetime(until).isoformat(timespec="seconds") if isinstance(until, int) else None
    # "sleeping": what journals written before this wording say
    if message in ("waiting for the end of its sleep", "waiting for sleeping") and when:
        return f"its sleep to end at {when}"
    return message.removeprefix("waiting for ") + (f" (or a timeout at {when})" if when else "")

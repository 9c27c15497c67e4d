"""Workflow hooks: user callbacks around runs and dispatches.

`on_prepare(ctx)` before a run's first step, `on_resume(ctx)` when a paused or recovered
run continues, `on_complete(result)` for every finished run (completed, failed, aborted),
then the runtime's own bookkeeping, then `on_cleanup()`; `on_dispatch(result)` for every
trigger dispatch, accepted or not. Hooks may be sync or async. A hook that raises anything
(a `BaseException` subclass, `KeyboardInterrupt`, `SystemExit` included) is logged and
recorded in the run's timeline; it never changes the run or its bookkeeping.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DefinitionError, describe_exception, raise_if_cancelled

HOOK_NAMES = ("on_prepare", "on_complete", "on_resume", "on_cleanup", "on_dispatch")
Hook = Callable[..., Any]
_log = logging.getLogger("orchestrator.hooks")


@dataclass(frozen=True)
class Hooks:
    """The hooks of one registered workflow (``register`` wins over the `Workflow`)."""

    on_prepare: Hook | None = None
    on_complete: Hook | None = None
    on_resume: Hook | None = None
    on_cleanup: Hook | None = None
    on_dispatch: Hook | None = None

    @classmethod
    def merge(
        cls, defined: Mapping[str, Hook | None], given: Mapping[str, Hook | None], *, label: str
    ) -> Hooks:
        """Hooks from the workflow, overridden by those given at registration."""
        chosen = {name: given.get(name) or defined.get(name) for name in HOOK_NAMES}
        for name, hook in chosen.items():
            if hook is not None and not callable(hook):
                raise DefinitionError(f"{label}: {name} must be callable, got {hook!r}")
        return cls(**chosen)


@dataclass(frozen=True)
class DispatchResult:
    """What `on_dispatch` receives: how one trigger dispatch was decided.

    Attributes:
        workflow_id: The workflow dispatched to.
        trigger_id: Its trigger.
        action: ``start``, ``queue``, ``drop``, ``reject``, ``signal`` or ``replace``.
        run_id: The new run, or the active run for a ``signal``.
        held_by: The run that held the slot, if the mode made a decision.
    """

    workflow_id: str
    trigger_id: str
    action: str
    run_id: str
    held_by: str | None


async def call_hook(hook: Hook | None, *args: Any, name: str, where: str) -> str | None:
    """Call a hook; returns a description of its failure (never raises but cancellation)."""
    if hook is None:
        return None
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except BaseException as exc:  # noqa: BLE001 - user code: recorded, never fatal
        raise_if_cancelled(exc)
        _log.exception("%s hook of %s failed", name, where)
        return f"{name} hook failed: {describe_exception(exc)}"
    return None

"""Registered workflows: id -> the current version, with its content hash.

A version is identified by a hash of what the workflow does (its pipelines' step names and
code), so the same definition registered again is the same version across restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..define.env import Env, Redactor
from ..define.hooks import HOOK_NAMES, Hooks
from ..define.model import BoundStep, FileTrigger, Schedule, Trigger, Workflow
from ..define.modes import Mode, Transient, describe
from ..define.services import ServiceScope
from ..errors import DefinitionError, TriggerNotFound, WorkflowNotFound
from .workers import Plan


@dataclass(frozen=True)
class RegisteredWorkflow:
    """A workflow as registered: its definition, version and journaled description."""

    workflow: Workflow
    version: str
    definition: str
    file: str | None = None
    mode: Mode = field(default_factory=Transient)
    env: Env = field(default_factory=Env)
    redactor: Redactor = field(default_factory=lambda: Redactor({}))
    hooks: Hooks = field(default_factory=Hooks)
    # Instances of its "workflow" services (set by the runtime at registration).
    service_scope: ServiceScope | None = field(default=None, compare=False, repr=False)
    # Its steps that run in worker processes, by (trigger id, step index).
    isolated: Plan = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        """The workflow's id."""
        return self.workflow.id

    @property
    def base_dir(self) -> Path | None:
        """The folder of the workflow's file, against which relative paths resolve."""
        return Path(self.file).parent if self.file else None

    def file_watches(self) -> dict[str, tuple[Path, str]]:
        """Trigger id -> (absolute folder, glob) for each `FileTrigger`."""
        return {
            tid: (trigger.folder(self.base_dir), trigger.glob)
            for tid, trigger in self.workflow.triggers.items()
            if isinstance(trigger, FileTrigger)
        }

    def describe_triggers(self) -> list[dict[str, Any]]:
        """Its triggers as JSON objects, for the journal and `orchestrator workflows`.

        Secrets are masked: a `where` may compare with a secret value.
        """
        described: list[dict[str, Any]] = []
        for tid, trigger in sorted(self.workflow.triggers.items()):
            if isinstance(trigger, Trigger):
                described.append(
                    {
                        "trigger_id": tid,
                        "type": "event",
                        "event": trigger.event,
                        "where": trigger.conditions.to_json(),
                        "source": sorted(trigger.sources) if trigger.sources else None,
                    }
                )
            elif isinstance(trigger, Schedule):
                described.append(
                    {"trigger_id": tid, "type": "schedule", "cron": trigger.cron, "tz": trigger.tz}
                )
            else:
                folder, glob = trigger.folder(self.base_dir), trigger.glob
                described.append(
                    {"trigger_id": tid, "type": "file", "dir": str(folder), "glob": glob}
                )
        for tid in sorted(set(self.workflow.bound) - set(self.workflow.triggers)):
            described.append({"trigger_id": tid, "type": "invoke"})
        redacted: list[dict[str, Any]] = self.redactor.redact_data(described)
        return redacted

    def steps(self, trigger_id: str) -> list[BoundStep]:
        """The bound steps of one pipeline, or `TriggerNotFound`."""
        steps = self.workflow.bound.get(trigger_id)
        if steps is None:
            known = ", ".join(sorted(self.workflow.bound)) or "none"
            raise TriggerNotFound(
                f"workflow {self.id!r} has no trigger {trigger_id!r} (it has: {known})"
            )
        return steps


def register(
    workflow: Workflow,
    *,
    file: str | None = None,
    mode: Mode | None = None,
    runtime_env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    hooks: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> RegisteredWorkflow:
    """Describe and version a workflow for registration (`mode` wins over the workflow's).

    Its ``ctx.env`` is the workflow's env over `runtime_env`; values of secret-looking keys
    (and of `secrets`) are redacted from what its runs journal, and from its journaled
    definition. `version` is the content hash of the file it was loaded from, if any; else
    one is made from its code.
    """
    if mode is not None and not isinstance(mode, Mode):
        raise DefinitionError(f"register(mode=...) takes a mode such as Serialized(), got {mode!r}")
    chosen = mode or workflow.mode or Transient()
    env = Env(workflow.env, runtime_env or {})
    redactor = Redactor(env, extra_keys=secrets)
    pipelines = {tid: [step.name for step in steps] for tid, steps in workflow.bound.items()}
    description = {
        "pipelines": pipelines,
        "mode": describe(chosen),
        "triggers": {tid: repr(t) for tid, t in workflow.triggers.items()},
    }
    described = redactor.redact_data(description)  # a `where` may hold a secret
    definition = json.dumps(described, sort_keys=True, separators=(",", ":"))
    defined = {name: getattr(workflow, name) for name in HOOK_NAMES}
    merged = Hooks.merge(defined, hooks or {}, label=f"workflow {workflow.id!r}")
    return RegisteredWorkflow(
        workflow=workflow,
        version=version or version_of(workflow),
        definition=definition,
        file=file,
        mode=chosen,
        env=env,
        redactor=redactor,
        hooks=merged,
    )


def version_of(workflow: Workflow) -> str:
    """A short content hash of the workflow's pipelines: step names and their code."""
    digest = hashlib.sha256(workflow.id.encode())
    for trigger_id in sorted(workflow.bound):
        digest.update(b"\0" + trigger_id.encode())
        for step in workflow.bound[trigger_id]:
            digest.update(b"\1" + step.name.encode() + b"\2" + _code_of(step).encode())
    return digest.hexdigest()[:12]


def _code_of(step: BoundStep) -> str:
    fn = step.step.fn
    try:
        return _SOURCES[fn]
    except (KeyError, TypeError):  # not seen yet; or not hashable or weakly referable
        pass
    try:
        code = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__qualname__", repr(type(fn)))
    with contextlib.suppress(TypeError):
        _SOURCES[fn] = code
    return code


# Each step function's source, read once: 1,000 workflows sharing a step would otherwise
# read and tokenize its file 1,000 times at start (a function's code never changes; an
# edited file is imported again as new functions).
_SOURCES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


class Registry:
    """The current version of each registered workflow."""

    def __init__(self) -> None:
        self._current: dict[str, RegisteredWorkflow] = {}

    def add(self, registered: RegisteredWorkflow) -> None:
        """Make `registered` the current version of its workflow."""
        self._current[registered.id] = registered

    def remove(self, workflow_id: str) -> RegisteredWorkflow:
        """Deregister a workflow; `WorkflowNotFound` if it is not registered."""
        registered = self.get(workflow_id)
        del self._current[workflow_id]
        return registered

    def get(self, workflow_id: str) -> RegisteredWorkflow:
        """The current version, or `WorkflowNotFound`."""
        try:
            return self._current[workflow_id]
        except KeyError:
            known = ", ".join(sorted(self._current)) or "none"
            raise WorkflowNotFound(
                f"no workflow {workflow_id!r} is registered (registered: {known})"
            ) from None

    def has(self, workflow_id: str) -> bool:
        """Whether a workflow with that id is registered."""
        return workflow_id in self._current

    def isolates(self) -> bool:
        """Whether any registered workflow has a step that runs in a worker process."""
        return any(registered.isolated for registered in self._current.values())

    def ids(self) -> list[str]:
        """Registered workflow ids, sorted."""
        return sorted(self._current)

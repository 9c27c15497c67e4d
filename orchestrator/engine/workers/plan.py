"""Which steps of a workflow run in worker processes, and how a worker finds each.

A step's own ``isolate`` wins; else the workflow's, the folder's ``[steps] isolate`` and the
runtime's ``isolate`` apply, in that order, to its sync steps that are not ``inline``. A
worker loads a step by the file version it was loaded from (the exact text), or, for a
workflow defined in code, by its function's module and qualified name, which must then
lead back to the function (so it is defined at a module's top level).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from ...define.env import Env
from ...define.model import BoundStep, Workflow
from ...errors import DefinitionError
from ...folder.loader import FileSource
from .pool import StepRef

Plan = dict[tuple[str, int], StepRef]  # (trigger id, step index) -> how a worker runs it


def plan_isolation(
    workflow: Workflow,
    *,
    version: str,
    env: Env,
    source: FileSource | None,
    default: bool,
) -> Plan:
    """The isolated steps of `workflow`; `DefinitionError` for one a worker cannot load."""
    folder_default = source.config.isolate if source is not None else None
    env_key, env_values = f"{workflow.id}@{version}", env.as_dict()
    plan: Plan = {}
    for trigger_id, steps in workflow.bound.items():
        for bound in steps:
            if not _isolated(bound, workflow.isolate, folder_default, default):
                continue
            if source is not None:
                ref, load = file_ref(source, workflow.id, trigger_id, bound.name)
            else:
                ref, load = _module_ref(workflow.id, trigger_id, bound)
            plan[trigger_id, bound.index] = StepRef(
                ref=ref,
                load=load,
                takes_ctx=bound.takes_ctx,
                is_async=bound.is_async,
                env_key=env_key,
                env=env_values,
            )
    return plan


def _isolated(bound: BoundStep, workflow: bool | None, folder: bool | None, runtime: bool) -> bool:
    if bound.step.isolate is not None:
        return bound.step.isolate
    if bound.is_async or bound.step.inline:
        return False
    for choice in (workflow, folder):
        if choice is not None:
            return choice
    return runtime


def file_ref(
    source: FileSource, workflow_id: str, trigger_id: str, step_name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A `StepRef`'s ref and load for a step of a workflow file: that version of the file."""
    key = f"{source.path}@{source.digest}"
    ref = {"key": key, "workflow": workflow_id, "trigger": trigger_id, "step": step_name}
    load = {
        "kind": "file",
        "path": str(source.path),
        "digest": source.digest,
        "text": source.text,
        "config": dataclasses.asdict(source.config),
    }
    return ref, load


def _module_ref(
    workflow_id: str, trigger_id: str, bound: BoundStep
) -> tuple[dict[str, Any], dict[str, Any]]:
    fn = bound.step.fn
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    if module is None or not isinstance(qualname, str) or _lookup(module, qualname) is not fn:
        raise DefinitionError(
            f"workflow {workflow_id!r} pipeline {trigger_id!r}: step {bound.name!r} is isolated "
            "(it runs in a worker process, which imports it by module and name), so it must "
            "be a function defined at the top level of a module; define it there, load the "
            "workflow from a folder, or pass isolate=False"
        )
    main = getattr(module, "__file__", None) if module_name == "__main__" else None
    ref = {"key": f"module:{module_name}", "workflow": workflow_id, "qualname": qualname}
    load = {"kind": "module", "module": module_name, "main": main, "sys_path": list(sys.path)}
    return ref, load


def _lookup(module: object, qualname: str) -> object:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target

"""A durable local workflow orchestrator: pipelines of steps, journaled in SQLite.

The public API is what `__all__` lists; every other module is private to the package.
Names are imported on first use, so a command that needs little (``orchestrator emit``)
starts without loading the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

if TYPE_CHECKING:
    from .clock import Clock, FakeClock
    from .context import StepContext
    from .errors import (
        DefinitionError,
        DuplicateKey,
        InvalidState,
        JournalCorrupt,
        JournalError,
        JournalLocked,
        OrchestratorError,
        PipelineError,
        RunNotActive,
        RunNotFound,
        RuntimeNotStarted,
        RuntimeStopped,
        ServiceError,
        ServiceNotFound,
        StepTimeout,
        TriggerNotFound,
        ValidationError,
        WorkflowNotFound,
    )
    from .hooks import DispatchResult
    from .model import FileTrigger, Schedule, Step, Trigger, Workflow
    from .modes import Exclusive, Serialized, SingletonLoop, Transient
    from .pipeline import run
    from .records import RunInfo, RunResult, TimelineEntry
    from .registry import RegisteredWorkflow
    from .runtime import Runtime
    from .services import Service, ServiceContext
    from .waits import PauseRequest, PauseService, Wait

__version__ = "0.1.0"

_EXPORTS = {
    "Clock": ".clock",
    "DefinitionError": ".errors",
    "DispatchResult": ".hooks",
    "DuplicateKey": ".errors",
    "Exclusive": ".modes",
    "FakeClock": ".clock",
    "FileTrigger": ".model",
    "InvalidState": ".errors",
    "JournalCorrupt": ".errors",
    "JournalError": ".errors",
    "JournalLocked": ".errors",
    "OrchestratorError": ".errors",
    "PauseRequest": ".waits",
    "PauseService": ".waits",
    "PipelineError": ".errors",
    "RegisteredWorkflow": ".registry",
    "RunInfo": ".records",
    "RunNotActive": ".errors",
    "RunNotFound": ".errors",
    "RunResult": ".records",
    "Runtime": ".runtime",
    "RuntimeNotStarted": ".errors",
    "RuntimeStopped": ".errors",
    "Schedule": ".model",
    "Serialized": ".modes",
    "Service": ".services",
    "ServiceContext": ".services",
    "ServiceError": ".errors",
    "ServiceNotFound": ".errors",
    "SingletonLoop": ".modes",
    "Step": ".model",
    "StepContext": ".context",
    "StepTimeout": ".errors",
    "TimelineEntry": ".records",
    "Transient": ".modes",
    "Trigger": ".model",
    "TriggerNotFound": ".errors",
    "ValidationError": ".errors",
    "Wait": ".waits",
    "Workflow": ".model",
    "WorkflowNotFound": ".errors",
    "run": ".pipeline",
}

__all__ = [
    "Clock",
    "DefinitionError",
    "DispatchResult",
    "DuplicateKey",
    "Exclusive",
    "FakeClock",
    "FileTrigger",
    "InvalidState",
    "JournalCorrupt",
    "JournalError",
    "JournalLocked",
    "OrchestratorError",
    "PauseRequest",
    "PauseService",
    "PipelineError",
    "RegisteredWorkflow",
    "RunInfo",
    "RunNotActive",
    "RunNotFound",
    "RunResult",
    "Runtime",
    "RuntimeNotStarted",
    "RuntimeStopped",
    "Schedule",
    "Serialized",
    "Service",
    "ServiceContext",
    "ServiceError",
    "ServiceNotFound",
    "SingletonLoop",
    "Step",
    "StepContext",
    "StepTimeout",
    "TimelineEntry",
    "Transient",
    "Trigger",
    "TriggerNotFound",
    "ValidationError",
    "Wait",
    "Workflow",
    "WorkflowNotFound",
    "run",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

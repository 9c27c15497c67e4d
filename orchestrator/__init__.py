"""A durable local workflow orchestrator: pipelines of steps, journaled in SQLite.

The public API is what `__all__` lists; every other module is private to the package.
Names are imported on first use, so a command that needs little (``orchestrator emit``)
starts without loading the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

if TYPE_CHECKING:
    from .clock import Clock
    from .define.hooks import DispatchResult
    from .define.model import FileTrigger, Schedule, Step, Trigger, Workflow
    from .define.modes import Exclusive, Serialized, SingletonLoop, Transient
    from .define.services import Service, ServiceContext
    from .define.waits import PauseRequest, PauseService, Wait
    from .engine.context import StepContext
    from .engine.registry import RegisteredWorkflow
    from .engine.runtime import Runtime
    from .engine.workers import Workers
    from .errors import (
        DefinitionError,
        DuplicateKey,
        InvalidState,
        JournalBackendUnavailable,
        JournalCorrupt,
        JournalError,
        JournalLocked,
        JournalNotPrivate,
        JournalPathInvalid,
        JournalPermissionDenied,
        JournalUnreachable,
        LoadError,
        OrchestratorError,
        PipelineError,
        RunNotActive,
        RunNotFound,
        RuntimeNotStarted,
        RuntimeStopped,
        ServiceError,
        ServiceNotFound,
        StepNotFound,
        StepTimeout,
        TriggerNotFound,
        ValidationError,
        WorkflowBusy,
        WorkflowDisabled,
        WorkflowNotFound,
    )
    from .pipeline.runner import run
    from .records import EventSource, RunCode, RunInfo, RunResult, RunStatus, TimelineEntry
    from .redaction import RedactSecrets
    from .state import MAX_DEPTH, MAX_PAYLOAD_BYTES
    from .testing import FakeClock

__version__ = "0.1.0"

_EXPORTS = {
    "Clock": ".clock",
    "DefinitionError": ".errors",
    "DispatchResult": ".define.hooks",
    "DuplicateKey": ".errors",
    "EventSource": ".records",
    "Exclusive": ".define.modes",
    "FakeClock": ".testing",
    "FileTrigger": ".define.model",
    "InvalidState": ".errors",
    "JournalBackendUnavailable": ".errors",
    "JournalCorrupt": ".errors",
    "JournalError": ".errors",
    "JournalLocked": ".errors",
    "JournalNotPrivate": ".errors",
    "JournalPathInvalid": ".errors",
    "JournalPermissionDenied": ".errors",
    "JournalUnreachable": ".errors",
    "LoadError": ".errors",
    "MAX_DEPTH": ".state",
    "MAX_PAYLOAD_BYTES": ".state",
    "OrchestratorError": ".errors",
    "PauseRequest": ".define.waits",
    "PauseService": ".define.waits",
    "PipelineError": ".errors",
    "RedactSecrets": ".redaction",
    "RegisteredWorkflow": ".engine.registry",
    "RunCode": ".records",
    "RunInfo": ".records",
    "RunNotActive": ".errors",
    "RunNotFound": ".errors",
    "RunResult": ".records",
    "RunStatus": ".records",
    "Runtime": ".engine.runtime",
    "RuntimeNotStarted": ".errors",
    "RuntimeStopped": ".errors",
    "Schedule": ".define.model",
    "Serialized": ".define.modes",
    "Service": ".define.services",
    "ServiceContext": ".define.services",
    "ServiceError": ".errors",
    "ServiceNotFound": ".errors",
    "SingletonLoop": ".define.modes",
    "Step": ".define.model",
    "StepContext": ".engine.context",
    "StepNotFound": ".errors",
    "StepTimeout": ".errors",
    "TimelineEntry": ".records",
    "Transient": ".define.modes",
    "Trigger": ".define.model",
    "TriggerNotFound": ".errors",
    "ValidationError": ".errors",
    "Wait": ".define.waits",
    "Workers": ".engine.workers",
    "Workflow": ".define.model",
    "WorkflowBusy": ".errors",
    "WorkflowDisabled": ".errors",
    "WorkflowNotFound": ".errors",
    "run": ".pipeline.runner",
}

__all__ = [
    "Clock",
    "DefinitionError",
    "DispatchResult",
    "DuplicateKey",
    "EventSource",
    "Exclusive",
    "FakeClock",
    "FileTrigger",
    "InvalidState",
    "JournalBackendUnavailable",
    "JournalCorrupt",
    "JournalError",
    "JournalLocked",
    "JournalNotPrivate",
    "JournalPathInvalid",
    "JournalPermissionDenied",
    "JournalUnreachable",
    "LoadError",
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "OrchestratorError",
    "PauseRequest",
    "PauseService",
    "PipelineError",
    "RedactSecrets",
    "RegisteredWorkflow",
    "RunCode",
    "RunInfo",
    "RunNotActive",
    "RunNotFound",
    "RunResult",
    "RunStatus",
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
    "StepNotFound",
    "StepTimeout",
    "TimelineEntry",
    "Transient",
    "Trigger",
    "TriggerNotFound",
    "ValidationError",
    "Wait",
    "Workers",
    "Workflow",
    "WorkflowBusy",
    "WorkflowDisabled",
    "WorkflowNotFound",
    "run",
]


if not TYPE_CHECKING:  # mypy sees the imports above, so a name not exported is an error
    __getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

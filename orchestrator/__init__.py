"""A durable local workflow orchestrator: pipelines of steps, journaled in SQLite.

The public API is what `__all__` lists; every other module is private to the package.
"""

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
from .model import Schedule, Step, Trigger, Workflow
from .modes import Exclusive, Serialized, SingletonLoop, Transient
from .pipeline import run
from .records import RunInfo, RunResult, TimelineEntry
from .registry import RegisteredWorkflow
from .runtime import Runtime
from .services import Service, ServiceContext
from .waits import PauseRequest, PauseService, Wait

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "DefinitionError",
    "DispatchResult",
    "DuplicateKey",
    "Exclusive",
    "FakeClock",
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

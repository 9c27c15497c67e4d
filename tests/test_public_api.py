"""The public API is exactly `__all__`, sorted; the core never imports the dashboard."""

from __future__ import annotations

import subprocess
import sys

import orchestrator
import orchestrator.clock
import orchestrator.testing

EXPECTED = [
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


TESTING = ["FakeClock", "Harness", "eventually", "eventually_blocking", "harness"]


def test_all_is_sorted_and_pinned() -> None:
    assert orchestrator.__all__ == sorted(orchestrator.__all__)
    assert orchestrator.__all__ == EXPECTED
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None
    assert orchestrator.testing.__all__ == sorted(orchestrator.testing.__all__) == TESTING
    for name in orchestrator.testing.__all__:
        assert getattr(orchestrator.testing, name) is not None
    assert orchestrator.FakeClock is orchestrator.testing.FakeClock is orchestrator.clock.FakeClock


def test_every_error_is_an_orchestrator_error_with_a_unique_code() -> None:
    errors = [
        getattr(orchestrator, name)
        for name in orchestrator.__all__
        if isinstance(getattr(orchestrator, name), type)
        and issubclass(getattr(orchestrator, name), BaseException)
    ]
    assert all(issubclass(error, orchestrator.OrchestratorError) for error in errors)
    codes = [error.code for error in errors]
    assert len(codes) == len(set(codes))
    assert all(code.isupper() for code in codes)


def test_the_core_never_imports_textual() -> None:
    code = (
        "import sys, orchestrator, orchestrator.cli\n"
        "print(any(m.split('.')[0] in ('textual', 'tui') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

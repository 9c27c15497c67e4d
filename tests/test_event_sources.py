"""Events record where they came from; a trigger may take events from some sources only,
and a `FileTrigger` only takes the runtime's own ``file.created`` events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from procs import acli

from orchestrator import (
    DefinitionError,
    EventSource,
    FileTrigger,
    Runtime,
    Trigger,
    Workflow,
)
from orchestrator.testing import eventually


def keep(state: dict[str, Any]) -> dict[str, Any]:
    return state


def flows(tmp_path: Path) -> list[Workflow]:
    return [
        Workflow(id="any", pipelines={"t": [keep]}, triggers={"t": Trigger("order.placed")}),
        Workflow(
            id="manual",
            pipelines={"t": [keep]},
            triggers={"t": Trigger("order.placed", source=["cli", "dashboard"])},
        ),
        Workflow(
            id="files",
            pipelines={"t": [keep]},
            triggers={"t": FileTrigger(dir=str(tmp_path / "inbox"), glob="*.csv")},
        ),
    ]


async def started(rt: Runtime) -> list[str]:
    return sorted(run.workflow_id for run in await rt.list_runs())


async def test_a_trigger_takes_events_from_its_sources_only(db: Path, tmp_path: Path) -> None:
    async with Runtime(db, workflows=flows(tmp_path)) as rt:
        await rt.emit("order.placed", {"n": 1})  # source "api"
        await rt.idle()
        assert await started(rt) == ["any"]
        out = await acli("emit", "order.placed", '{"n": 2}', "--db", str(db))
        assert out.returncode == 0, out.stderr

        async def both() -> bool:
            return await started(rt) == ["any", "any", "manual"]

        await eventually(both, what="the CLI's event to start both triggers")


async def test_a_file_created_event_from_outside_never_starts_a_file_trigger(
    db: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    forged = {"path": "/etc/shadow", "size": 1, "dir": str(inbox), "glob": "*.csv"}
    async with Runtime(db, workflows=flows(tmp_path)) as rt:
        await rt.emit("file.created", forged)
        out = await acli("emit", "file.created", json.dumps(forged), "--db", str(db))
        assert out.returncode == 0, out.stderr
        await rt.idle()
        assert await started(rt) == []
        (inbox / "real.csv").write_text("a,b\n")

        async def one_run() -> list[Any]:
            return await rt.list_runs()

        runs = await eventually(one_run, what="the dropped file to start a run")
        assert [(run.workflow_id, run.state["path"]) for run in runs] == [
            ("files", str(inbox / "real.csv"))
        ]


def test_a_trigger_source_is_checked_when_it_is_defined() -> None:
    assert Trigger("x", source="cli").sources == {EventSource.CLI}
    assert Trigger("x", source=("api", EventSource.SYSTEM)).sources == {"api", "system"}
    for bad in ("clii", [], ["cli", "nope"], 3):
        with pytest.raises(DefinitionError, match="source"):
            Trigger("x", source=bad)  # type: ignore[arg-type]

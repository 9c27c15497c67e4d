"""`ctx.env` layering and secret redaction in what runs journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator import Runtime, Step, Workflow


def read_env(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {
        **state,
        "url": ctx.env.get("STOCK_URL"),
        "region": ctx.env.get("REGION"),
        "missing": ctx.env.get("NOPE"),
    }


async def test_workflow_env_wins_over_the_runtime_env(db: Path) -> None:
    flow = Workflow(id="w", pipelines={"go": [read_env]}, env={"STOCK_URL": "http://wf"})
    runtime_env = {"STOCK_URL": "http://rt", "REGION": "eu"}
    async with Runtime(db, env=runtime_env, workflows=[flow]) as rt:
        result = await rt.invoke("w", "go", {})
    assert result.state == {"url": "http://wf", "region": "eu", "missing": None}


async def test_the_runtime_env_defaults_to_the_process_environment(
    db: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("REGION", "from-os")
    async with Runtime(db, workflows=[Workflow(id="w", pipelines={"go": [read_env]})]) as rt:
        assert (await rt.invoke("w", "go", {})).state["region"] == "from-os"


async def test_secret_values_are_redacted_from_logs_errors_and_timeline(
    db: Path, caplog: Any
) -> None:
    def leaky(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        ctx.log.info("calling with token %s and %s", ctx.env.get("API_TOKEN"), ctx.env.get("PLAIN"))
        raise PermissionError(f"denied for {ctx.env.get('API_TOKEN')} / {ctx.env.get('DB_PASS')}")

    env = {"API_TOKEN": "tok-123456", "PLAIN": "visible-value", "DB_PASS": "hunter22"}
    flow = Workflow(id="w", pipelines={"go": [Step(leaky, retries=1)]})
    async with Runtime(db, env=env, secrets=["DB_PASS"], workflows=[flow]) as rt:
        result = await rt.invoke("w", "go", {})
        entries = await rt.timeline(result.run_id)
    journaled = " ".join(f"{e.message} {e.data}" for e in entries) + (result.error or "")
    assert "tok-123456" not in journaled and "hunter22" not in journaled
    assert "visible-value" in journaled and "***" in journaled
    assert "tok-123456" not in caplog.text
    raw = db.read_bytes()  # the WAL was checkpointed into it at close
    assert b"tok-123456" not in raw and b"hunter22" not in raw


async def test_a_secret_in_state_is_journaled_but_warned_about(db: Path) -> None:
    def careless(state: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {**state, "auth": ctx.env.get("API_TOKEN")}

    flow = Workflow(id="w", pipelines={"go": [careless, careless]})
    async with Runtime(db, env={"API_TOKEN": "tok-123456"}, workflows=[flow]) as rt:
        result = await rt.invoke("w", "go", {})
        warnings = [e for e in await rt.timeline(result.run_id) if e.kind == "warning"]
    assert result.state["auth"] == "tok-123456"  # state is kept as the step returned it
    assert len(warnings) == 1 and "API_TOKEN" in (warnings[0].message or "")
    assert "tok-123456" not in (warnings[0].message or "")

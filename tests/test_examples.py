"""The workflow files in examples/, each tested as a user tests theirs: with the harness.

Each test gets a private copy of examples/ (the `examples` fixture: they write files next
to themselves) and loads the file it is about with `orchestrator.testing.harness`: a
runtime on a throwaway journal and a `FakeClock`, each action returning once the runtime
is idle. One test loads the copy as a folder, as the daemon does; the last ones run the
real daemon and CLI.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES
from procs import Daemon, cli

from orchestrator import RunInfo, Runtime
from orchestrator.testing import Harness, eventually, harness

WORKFLOWS = [
    "alerts",
    "approval",
    "batch",
    "consumer",
    "deploy",
    "ingest",
    "nightly_report",
    "orders",
]


# Generous: the machine is shared. Only what a file watcher moves is polled.
TIMEOUT = 20.0


async def the_only_run(h: Harness, workflow: str, *wanted: str) -> RunInfo:
    """The workflow's only run, in one of the `wanted` statuses."""
    runs = await h.runs(workflow)
    assert [run.status for run in runs] in [[status] for status in wanted], runs
    return runs[0]


async def status_of(h: Harness, run_id: str, *wanted: str) -> RunInfo:
    """The run; it has one of the `wanted` statuses."""
    info = await h.run(run_id)
    assert info.status in wanted, f"run {run_id} is {info.status}, not {' or '.join(wanted)}"
    return info


def test_every_example_is_a_workflow_file_with_cli_instructions() -> None:
    files = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith(("_", ".")))
    assert files == WORKFLOWS
    for name in files:
        doc = (EXAMPLES / f"{name}.py").read_text().split('"""')[1]
        assert "orchestrator " in doc, f"{name}.py: its docstring says how to drive it"


async def test_the_folder_loads_every_example(db: Path, examples: Path) -> None:
    async with Runtime(db, workflows_dir=examples) as rt:
        assert rt.list_workflows() == WORKFLOWS
        assert sorted(rt.registry("nightly_report").workflow.pipelines) == ["nightly", "now"]


# -- orders.py ------------------------------------------------------------------------------


async def test_order_ships_once_paid(examples: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.examples.orders")
    async with harness(examples / "orders.py") as h:
        await h.emit("order.created", {"order_id": 8, "total": 0})  # where total > 0: no run
        await h.emit("order.created", {"order_id": 7, "total": 12})
        run = await the_only_run(h, "orders", "paused")
        assert run.state["reservation"] == "berlin-1/7"  # env WAREHOUSE, via the service
        await h.emit("payment.received", {"order_id": 99, "amount": 5})  # someone else's
        assert (
            await status_of(h, run.run_id, "paused")
        ).step == "wait_for_payment"  # the step it waits in

        await h.emit("payment.received", {"order_id": 7, "amount": 12})
        done = await status_of(h, run.run_id, "completed", "failed")
        assert done.status == "completed", done.error
        assert done.state["status"] == "shipped"
        assert done.state["payment"] == {"order_id": 7, "amount": 12}
        assert done.state["carrier"] == "parcel-post"
        assert "order 7: reserved berlin-1/7" in await h.logs(run.run_id, "info")
        assert len(await h.runs("orders")) == 1
    # The on_complete hook logged the outcome.
    assert f"order 7: run {run.run_id} completed (shipped)" in caplog.messages


async def test_unpaid_order_is_cancelled_when_the_payment_times_out(examples: Path) -> None:
    async with harness(examples / "orders.py") as h:
        await h.emit("order.created", {"order_id": 7, "total": 12})
        run = await the_only_run(h, "orders", "paused")
        await h.advance(3000)  # under the default hour: still waiting
        assert (
            await status_of(h, run.run_id, "paused")
        ).step == "wait_for_payment"  # the step it waits in

        await h.advance(600)
        done = await status_of(h, run.run_id, "completed", "failed")
        assert done.status == "completed", done.error
        assert done.state["status"] == "cancelled"
        assert done.state["payment"] is None
        assert done.state["reservation"] is None
        warnings = await h.logs(run.run_id, "warning")
        assert "order 7: no payment in time, cancelled" in warnings


# -- ingest.py ------------------------------------------------------------------------------


async def _one_ended(h: Harness, workflow: str) -> RunInfo | None:
    runs = await h.runs(workflow)
    return runs[0] if len(runs) == 1 and runs[0].status in ("completed", "failed") else None


async def test_a_csv_dropped_into_the_inbox_is_summarised_and_archived(examples: Path) -> None:
    inbox, outbox = examples / "inbox", examples / "outbox"
    async with harness(examples / "ingest.py") as h:
        assert inbox.is_dir()  # created for the FileTrigger, next to the file
        (inbox / "notes.txt").write_text("not a csv\n")
        # As the example recommends: write under a dot-name, rename when complete.
        partial = inbox / ".sales.csv"
        partial.write_text("sku,qty,price\nA-1,2,9.5\nB-7,1,20\nC-3,4,0.25\n")
        os.replace(partial, inbox / "sales.csv")

        run = await eventually(  # the file watcher's event: polled
            lambda: _one_ended(h, "ingest"), what="one ingest run to end", timeout=TIMEOUT
        )
        assert run.status == "completed", run.error
        assert run.state["path"] == str(inbox / "sales.csv")
        summary = json.loads((outbox / "sales.json").read_text())
        assert summary == {
            "file": "sales.csv",
            "rows": 3,
            "columns": ["sku", "qty", "price"],
            "totals": {"qty": 7.0, "price": 29.75},
        }
        assert not (inbox / "sales.csv").exists()
        assert (inbox / "done" / "sales.csv").read_text().startswith("sku,qty,price")
        assert (inbox / "notes.txt").exists()  # *.csv only
        await h.idle()
        assert len(await h.runs("ingest")) == 1  # neither the dot-name nor the move


# -- batch.py -------------------------------------------------------------------------------


async def _csv_run_completed(h: Harness) -> RunInfo | None:
    runs = [r for r in await h.runs("batch") if r.trigger_id == "csv"]
    return runs[0] if runs and runs[0].status == "completed" else None


async def test_a_csv_fans_out_one_child_run_per_row_joined_into_a_summary(
    db: Path, examples: Path
) -> None:
    batches = examples / "batches"
    async with harness(examples / "batch.py", db=db) as h:
        partial = batches / ".prices.csv"
        partial.write_text("sku,qty,price\nA-1,2,9.5\nB-7,1,20\nC-3,x,1\n", encoding="utf-8")
        partial.rename(batches / "prices.csv")
        parent = await eventually(  # the file watcher's event: polled
            lambda: _csv_run_completed(h), what="the csv run completes", timeout=TIMEOUT
        )
        rows = [r for r in await h.runs("batch") if r.trigger_id == "row"]
        assert sorted(str(r.status) for r in rows) == ["completed", "completed", "failed"]
        assert {r.parent for r in rows} == {parent.run_id}
        summary = json.loads((batches / "done" / "prices.json").read_text())
        assert (summary["rows"], summary["priced"], summary["total"]) == (3, 2, 39.0)
        [failed] = summary["failed"]
        assert "could not convert string to float: 'x'" in failed["error"]
        assert (batches / "done" / "prices.csv").exists()
        assert not (batches / "prices.csv").exists()
    shown = cli("show", parent.run_id, "--db", str(db))
    assert "children  3, 3 of them final (2 completed, 1 failed)" in shown.stdout


# -- nightly_report.py ----------------------------------------------------------------------


def _summaries(examples: Path, **rows: int) -> None:
    (examples / "outbox").mkdir()
    for name, count in rows.items():
        (examples / "outbox" / f"{name}.json").write_text(json.dumps({"rows": count}))


async def test_nightly_report_can_be_invoked_now(examples: Path) -> None:
    _summaries(examples, sales=3, returns=4)
    async with harness(examples / "nightly_report.py") as h:
        result = await h.invoke("nightly_report", "now")
        assert result.ok, result.error
    assert (result.state["files"], result.state["rows"]) == (2, 7)
    report = json.loads(Path(result.state["report"]).read_text())
    assert report["files"] == 2
    assert report["rows"] == 7
    assert report["run"] == result.run_id
    assert Path(result.state["report"]).parent == examples / "reports"


async def test_nightly_report_runs_once_a_night_at_two(examples: Path) -> None:
    _summaries(examples, sales=5)
    async with harness(
        examples / "nightly_report.py", start=datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    ) as h:
        await h.advance("12h")
        await h.advance("12h")
        run = await the_only_run(h, "nightly_report", "completed", "failed")
        assert run.status == "completed", run.error
        assert run.trigger_id == "nightly"
        night = datetime.fromisoformat(run.state["scheduled_for"])
        assert night.strftime("%H:%M") == "02:00"
        report = json.loads(Path(run.state["report"]).read_text())
        assert report == {"day": night.date().isoformat(), "files": 1, "rows": 5, "run": run.run_id}
        await h.idle()
        assert len(await h.runs("nightly_report")) == 1


# -- approval.py ----------------------------------------------------------------------------


async def test_approval_is_decided_by_resume_by_event_or_by_timeout(examples: Path) -> None:
    async with harness(examples / "approval.py") as h:
        await h.emit("approval.requested", {"what": "refund"})  # no request_id: no run
        await h.emit("approval.requested", {"request_id": "r-1", "what": "refund", "amount": 80})
        first = await the_only_run(h, "approval", "paused")
        assert "approval needed: refund of 80 (request r-1)" in await h.logs(first.run_id)
        done = await h.resume(first.run_id, {"approved": True})
        assert done.state["outcome"] == "approved", done.error
        assert "request r-1 approved: carrying it out" in await h.logs(first.run_id, "info")

        second = (await h.invoke("approval", "request", {"request_id": "r-2"})).run_id
        await h.emit("approval.decided", {"request_id": "r-1", "approved": True})  # not r-2's
        await h.emit("approval.decided", {"request_id": "r-2", "approved": False, "by": "bo"})
        done = await status_of(h, second, "completed", "failed")
        assert done.state["outcome"] == "rejected", done.error
        assert done.state["decision"]["by"] == "bo"
        assert "request r-2 rejected" in await h.logs(second, "warning")

        third = (await h.invoke("approval", "request", {"request_id": "r-3"})).run_id
        await h.advance("3d")
        done = await status_of(h, third, "completed", "failed")
        assert done.state["outcome"] == "expired", done.error


# -- consumer.py ----------------------------------------------------------------------------


def _jobs(examples: Path, *names: str) -> None:
    (examples / "queue").mkdir(exist_ok=True)
    for name in names:
        (examples / "queue" / f"{name}.json").write_text(json.dumps({"task": name}))


def _done(examples: Path) -> list[str]:
    log = examples / "queue" / "done.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


async def test_consumer_pokes_while_busy_join_the_active_loop(examples: Path) -> None:
    async with harness(examples / "consumer.py") as h:
        _jobs(examples, "job-1", "job-2")
        await h.emit("queue.poke", {"more": True})
        loop = await the_only_run(h, "consumer", "paused")  # drained, now lingering
        assert loop.state["handled"] == 2
        assert _done(examples) == ["job-1.json", "job-2.json"]

        _jobs(examples, "job-3")
        await h.emit("queue.poke", {"more": True})  # busy: signalled, not a new run
        loop = await the_only_run(h, "consumer", "paused")
        assert loop.state["more"] is True
        assert any(e.kind == "run.signalled" for e in await h.timeline(loop.run_id))

        await h.advance(5)  # the linger ends: the loop drains again, then ends
        done = await status_of(h, loop.run_id, "completed", "failed")
        assert done.state["handled"] == 3, done.error
        assert _done(examples) == ["job-1.json", "job-2.json", "job-3.json"]

        await h.emit("queue.poke", {"more": True})  # idle again: a new loop starts
        runs = await h.runs("consumer")
        assert [run.status for run in runs] == ["completed", "paused"], "a second consumer run"
        assert runs[0].run_id == loop.run_id
        assert runs[1].state["handled"] == 0


# -- deploy.py ------------------------------------------------------------------------------


async def test_deploys_queue_up_and_never_overlap(examples: Path) -> None:
    versions = ["1.0.0", "1.0.1", "1.0.2"]
    async with harness(examples / "deploy.py") as h:
        for version in versions:
            flaky = version == "1.0.1"
            await h.emit("deploy.requested", {"service": "api", "version": version, "flaky": flaky})
        runs = await h.runs("deploy")
        assert [run.state["version"] for run in runs] == versions
        assert [run.status for run in runs] == ["paused", "queued", "queued"]  # the first bakes
        # The first bake (3 s by default), the second deploy's retry backoff (1 s), its bake,
        # then the third's bake.
        for seconds in (3, 1, 3, 3):
            await h.advance(seconds)
        for run in runs:
            done = await status_of(h, run.run_id, "completed", "failed")
            assert done.status == "completed", done.error
            assert done.state["live"] is True

        spans = []
        for run in runs:
            timeline = await h.timeline(run.run_id)
            kinds = [entry.kind for entry in timeline]
            started = next(e.at for e in timeline if e.kind == "step.started")
            ended = next(e.at for e in timeline if e.kind == "run.completed")
            spans.append((started, ended, kinds))
        # The second and third waited their turn; each started after the previous ended.
        assert "run.queued" not in spans[0][2]
        assert "run.queued" in spans[1][2] and "run.queued" in spans[2][2]
        for (_, ended, _), (started, _, _) in itertools.pairwise(spans):
            assert started >= ended
        assert all("run.paused" in kinds for *_, kinds in spans)  # the bake (ctx.sleep)

        retries = [e for e in await h.timeline(runs[1].run_id) if e.kind == "step.failed"]
        assert [e.step for e in retries] == ["release"]
        assert "registry answered 503" in (retries[0].message or "")

    lines = (examples / "releases" / "api.log").read_text().splitlines()
    assert [line.split()[1] for line in lines] == versions  # first in, first out, once each


# -- alerts.py ------------------------------------------------------------------------------


async def test_alerts_note_every_failed_or_aborted_run_once(examples: Path) -> None:
    files = [examples / "alerts.py", examples / "deploy.py", examples / "orders.py"]
    async with harness(files) as h:
        failed = await h.invoke("deploy", "request", {})  # no service: the build fails
        assert failed.status == "failed"
        await h.emit("order.created", {"order_id": 9, "total": 5})
        order = await the_only_run(h, "orders", "paused")
        await h.runtime.abort(order.run_id)
        # Forged by hand (source "api"): the alert takes system events only.
        await h.emit("run.failed", {"run_id": "x", "workflow_id": "y", "status": "failed"})
        alerts = await h.runs("alerts")
        assert [(a.trigger_id, a.status) for a in alerts] == [
            ("failed", "completed"),
            ("aborted", "completed"),
        ]
        assert alerts[0].state["run_id"] == failed.run_id
        logged = await h.logs(alerts[1].run_id, "warning")
        assert logged == [f"orders run {order.run_id} aborted [ABORTED]: aborted by request"]
    lines = (examples / "alerts" / "alerts.log").read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"deploy run {failed.run_id} failed [STEP_FAILED]: step 'build'")
    assert lines[1] == f"orders run {order.run_id} aborted [ABORTED]: aborted by request"


# -- the daemon and the CLI -----------------------------------------------------------------


@pytest.mark.slow
def test_approval_through_the_daemon_and_the_cli(tmp_path: Path, examples: Path) -> None:
    db = tmp_path / "daemon.db"
    with Daemon(examples, db).start() as daemon:
        request = {"request_id": "r-9", "what": "laptop", "amount": 1200}
        emitted = cli("emit", "approval.requested", json.dumps(request), "--db", str(db))
        assert emitted.returncode == 0, emitted.stderr

        def paused() -> list[dict[str, Any]]:
            out = cli(
                "runs", "--workflow", "approval", "--status", "paused", "--json", "--db", str(db)
            )
            return json.loads(out.stdout) if out.returncode == 0 else []

        (run,) = daemon.wait_until(paused, 30, "a paused approval run")
        resumed = cli("resume", run["run_id"], '{"approved": true}', "--db", str(db))
        assert resumed.returncode == 0, resumed.stderr

        def finished() -> dict[str, Any] | None:
            out = cli("show", run["run_id"], "--json", "--db", str(db))
            shown = json.loads(out.stdout)
            return shown if shown["status"] in ("completed", "failed") else None

        shown = daemon.wait_until(finished, 30, "the approval run to end")
        assert shown["status"] == "completed", shown["error"]
        assert shown["state"]["outcome"] == "approved"
        logged = [entry["message"] for entry in shown["timeline"] if entry["source"] == "logger"]
        assert "request r-9 approved: carrying it out" in logged
        assert daemon.stop() == 0


@pytest.mark.slow
def test_alerts_through_the_daemon_and_the_cli(tmp_path: Path, examples: Path) -> None:
    db = tmp_path / "alerts.db"
    alerts = examples / "alerts" / "alerts.log"
    with Daemon(examples, db).start() as daemon:
        invoked = cli("invoke", "deploy", "request", "{}", "--wait", "--db", str(db))
        assert invoked.returncode == 1, invoked.stderr  # no service: the build failed
        run_id = invoked.stdout.strip()
        line = daemon.wait_until(
            lambda: alerts.read_text() if alerts.exists() else None, 30, "an alert line"
        )
        assert line.startswith(f"deploy run {run_id} failed [STEP_FAILED]: ")

        def alert_run() -> dict[str, Any] | None:
            out = cli("runs", "--workflow", "alerts", "--json", "--db", str(db))
            runs = json.loads(out.stdout) if out.returncode == 0 else []
            return runs[0] if runs and runs[0]["status"] == "completed" else None

        done = daemon.wait_until(alert_run, 30, "the alert run to complete")
        shown = json.loads(cli("show", done["run_id"], "--json", "--db", str(db)).stdout)
        [received] = [e for e in shown["timeline"] if e["kind"] == "event.received"]
        assert (received["data"]["type"], received["data"]["source"]) == ("run.failed", "system")
        assert daemon.stop() == 0

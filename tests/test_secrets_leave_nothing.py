"""A secret never reaches the journal's bytes, the daemon's log or the CLI's output.

The secrets go everywhere user code can put them: a trigger's ``where``, an exception at
import, a failing hook, a failing step's exception and a log line. The checks read raw
bytes (the journal, its -wal, the log files, what each command printed), never the
orchestrator's own reading of them.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import Daemon, cli

from orchestrator import Runtime, Workflow
from orchestrator.cli.daemon import configure_logging
from orchestrator.testing import eventually, eventually_blocking

TOKEN = "tok-S3CRET-from-environ"  # API_TOKEN in the daemon's environment
PASSWORD = "pw-S3CRET-in-workflow-env"  # only in the workflow's own env
EXTRA = "xtra-S3CRET-named-by-runtime"  # a key named by Runtime(secrets=[...])
SECRETS = [TOKEN, PASSWORD, EXTRA]
TIMEOUT = 30.0

LEAKY = textwrap.dedent(
    """\
    import os

    from orchestrator import Trigger, Workflow

    TOKEN = os.environ["API_TOKEN"]
    PASSWORD = "pw-S3CRET-in-workflow-env"
    EXTRA = os.environ.get("PLAIN_NAME", "")


    def refuse(ctx):
        raise RuntimeError(f"hook refused {TOKEN} and {PASSWORD} and {EXTRA}")


    def leak(state, ctx):
        ctx.log.info(f"calling with {TOKEN} / {PASSWORD} / {EXTRA}")
        raise PermissionError(f"denied for {TOKEN} / {PASSWORD} / {EXTRA}")


    workflow = Workflow(
        id="leaky",
        pipelines={"order": [leak]},
        triggers={
            "order": Trigger(
                event="order.created",
                where={"token": ("==", TOKEN), "pw": ("!=", PASSWORD), "x": ("!=", EXTRA)},
            )
        },
        env={"DB_PASSWORD": PASSWORD},
        on_prepare=refuse,
    )
    """
)
BROKEN = 'import os\n\nraise RuntimeError("cannot connect with " + os.environ["API_TOKEN"])\n'


def assert_no_secret(what: str, data: bytes) -> None:
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret!r} leaked into {what}"


def journal_bytes(db: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes()
        for path in (db, Path(f"{db}-wal"))
        if path.exists()  # the -wal is folded into the journal at a clean stop
    }


def cli_outputs(db: Path, run_id: str) -> dict[str, bytes]:
    commands = [
        ["workflows"],
        ["workflows", "--json"],
        ["runs"],
        ["runs", "--json"],
        ["show", run_id],
        ["show", run_id, "--json"],
    ]
    outputs = {}
    for command in commands:
        out = cli(*command, "--db", str(db))
        assert out.returncode == 0, out.stderr
        outputs[" ".join(command)] = (out.stdout + out.stderr).encode()
    return outputs


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = (tmp_path / "workflows").resolve()
    path.mkdir()
    (path / "leaky.py").write_text(LEAKY)
    (path / "broken.py").write_text(BROKEN)
    return path


def test_a_daemon_writes_no_secret_to_its_journal_log_or_the_cli(
    folder: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)  # the daemon and each command inherit it
    with Daemon(folder, db) as daemon:
        daemon.start()

        def loaded() -> dict[str, object] | None:
            document: dict[str, object] = json.loads(
                cli("workflows", "--json", "--db", str(db)).stdout
            )
            return document if document["workflows"] and document["errors"] else None

        document = daemon.wait_until(loaded, TIMEOUT, "leaky.py loaded, broken.py failed")
        out = cli("invoke", "leaky", "order", "--wait", "--db", str(db))
        assert out.returncode == 1, out.stderr
        run_id = out.stdout.strip()  # printed at once; how the run ended goes to stderr
        assert_no_secret("invoke --wait", (out.stdout + out.stderr).encode())
        daemon.wait_until(lambda: "hook refused ***" in daemon.log() or None, TIMEOUT, "hook log")
        running = {**journal_bytes(db), **cli_outputs(db, run_id), "log": daemon.log().encode()}
        assert daemon.stop() == 0
    for what, data in running.items():
        assert_no_secret(what, data)
    for name, data in journal_bytes(db).items():
        assert_no_secret(f"{name} after the stop", data)
    log = daemon.log()
    assert_no_secret("the daemon's log after the stop", log.encode())
    # Redacted, not dropped: each message is there with its secret masked.
    assert "hook refused ***" in log and "cannot connect with ***" in log
    assert "cannot connect with ***" in json.dumps(document["errors"])
    shown = running[f"show {run_id} --json"].decode()
    assert "denied for ***" in shown and "calling with ***" in shown
    assert '"token"' in running["workflows --json"].decode()  # the where is shown, masked


@pytest.fixture
def daemon_log(tmp_path: Path) -> Iterator[Path]:
    """The daemon's logging as `up` sets it while the dashboard runs: ``DB.log``."""
    path = tmp_path / "journal.db.log"
    logger = logging.getLogger("orchestrator")
    before = list(logger.handlers)
    configure_logging(path)
    try:
        yield path
    finally:
        for handler in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(handler)
            handler.close()


async def test_an_embedded_runtime_writes_no_secret_to_its_journal_or_db_log(
    folder: Path, db: Path, daemon_log: Path
) -> None:
    env = {"API_TOKEN": TOKEN, "PLAIN_NAME": EXTRA}
    async with Runtime(db, env=env, secrets=["PLAIN_NAME"], workflows_dir=folder) as rt:
        # The folder's files read os.environ at import, the runtime's env is its own.
        assert not rt.list_workflows()  # leaky.py needs API_TOKEN in os.environ
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("API_TOKEN", TOKEN)
        patch.setenv("PLAIN_NAME", EXTRA)
        async with Runtime(db, env=env, secrets=["PLAIN_NAME"], workflows_dir=folder) as rt:
            assert rt.list_workflows() == ["leaky"]
            result = await rt.invoke("leaky", "order", {})
            assert result.error is not None and "denied for ***" in result.error
            await rt.idle()
            await eventually(lambda: "hook refused ***" in daemon_log.read_text(), what="log")
            running = journal_bytes(db)
    for what, data in {**running, **journal_bytes(db)}.items():
        assert_no_secret(what, data)
    text = daemon_log.read_bytes()
    assert_no_secret("DB.log", text)
    assert b"hook refused ***" in text and b"cannot connect with ***" in text
    assert daemon_log.stat().st_mode & 0o777 == 0o600


def test_the_daemon_log_redacts_what_a_worker_prints(
    folder: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    (folder / "broken.py").unlink()
    (folder / "printer.py").write_text(
        textwrap.dedent(
            """\
            import os, sys

            from orchestrator import Workflow


            def shout(state):
                print("worker says", os.environ["API_TOKEN"], file=sys.stderr, flush=True)
                return state


            workflow = Workflow(id="printer", pipelines={"go": [shout]})
            """
        )
    )
    with Daemon(folder, db) as daemon:
        daemon.start()
        out = cli("invoke", "printer", "go", "--wait", "--db", str(db))
        assert out.returncode == 0, out.stderr
        eventually_blocking(
            lambda: "worker says ***" in daemon.log(), what="the relayed line", timeout=TIMEOUT
        )
        assert daemon.stop() == 0
    assert_no_secret("the daemon's log", daemon.log().encode())


async def test_an_embedded_runtime_masks_the_handlers_it_finds_at_start(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(ctx: object) -> None:
        raise RuntimeError(f"hook refused {PASSWORD}")

    def step(state: dict[str, object]) -> dict[str, object]:
        logging.getLogger("orchestrator.user").error("step saw %s", PASSWORD)
        return state

    flow = Workflow(
        id="w", pipelines={"go": [step]}, env={"DB_PASSWORD": PASSWORD}, on_prepare=refuse
    )
    async with Runtime(db, env={}, workflows=[flow]) as rt:
        await rt.invoke("w", "go", {})
        await rt.idle()
    assert "hook refused ***" in caplog.text and "step saw ***" in caplog.text
    assert PASSWORD not in caplog.text

"""The journal's lease: one live owner at a time, and a dead owner's lease is taken at once."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import JournalLocked, Runtime, Workflow

ROOT = Path(__file__).resolve().parent.parent
HOLDER = """
import asyncio, sys
from orchestrator import Runtime

async def main():
    async with Runtime(sys.argv[1]):
        print("holding", flush=True)
        await asyncio.sleep(120)  # holds the lease until the test kills it

asyncio.run(main())
"""


def lease_row(db: Path) -> tuple[Any, ...] | None:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT pid, host, ready FROM lease").fetchone()
    finally:
        conn.close()


def echo(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "seen": True}


WORKFLOW = Workflow(id="echo", pipelines={"go": [echo]})


@pytest.fixture
def holder(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another live process that holds the journal's lease until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "holding\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.slow
async def test_live_process_holds_lease_until_killed(
    db: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(JournalLocked, match=rf"in use by pid {holder.pid} on ") as caught:
        async with Runtime(db):
            pytest.fail("a second runtime opened a journal held by a live process")
    assert caught.value.code == "JOURNAL_LOCKED"
    assert lease_row(db) == (holder.pid, socket.gethostname(), 1)

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)  # reaped: the pid is gone, not a zombie
    started = time.monotonic()
    async with Runtime(db) as rt:
        took = time.monotonic() - started
        assert lease_row(db) == (os.getpid(), socket.gethostname(), 1)
        await rt.register(WORKFLOW)
        result = await rt.invoke("echo", "go", {"n": 1})
        assert result.state == {"n": 1, "seen": True}
    assert took < 2.0, f"taking over a dead process's lease took {took:.1f}s"
    assert lease_row(db) is None


async def test_second_runtime_in_process_is_refused_until_the_first_closes(db: Path) -> None:
    async with Runtime(db) as first:
        with pytest.raises(JournalLocked, match=rf"in use by pid {os.getpid()} on "):
            async with Runtime(db):
                pytest.fail("two runtimes opened one journal")
        # The refused runtime left the owner's lease alone: the owner still writes.
        await first.register(WORKFLOW)
        assert (await first.invoke("echo", "go", {})).status == "completed"
        assert lease_row(db) == (os.getpid(), socket.gethostname(), 1)
    assert lease_row(db) is None, "a clean close releases the lease"
    async with Runtime(db) as again:
        assert len(await again.list_all_runs()) == 1

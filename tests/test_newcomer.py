"""The README's quick start, as a newcomer follows it, on a clean clone.

`git clone` of this repository's HEAD, its ``scripts/setup`` for real (a new ``.venv``,
pip from the package index: the test is skipped, with pip's reason, where the index cannot
be reached), then ``./scripts/up --headless`` as the daemon, with no way to reach the index
(so it proves that a set-up clone starts without pip), and the CLI of the clone's ``.venv``
from other processes, in the clone's root and without ``--db``: it sees the daemon's
journal, and the run the daemon executed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT, alive, reap

from orchestrator.testing import eventually_blocking

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SETUP_TIMEOUT = 600.0
TIMEOUT = 60.0
# What pip says when it cannot reach the package index (then the test is skipped).
UNREACHABLE = (
    "No matching distribution found",
    "Could not find a version",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
)
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_FIND_LINKS": ""}


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean clone of this repository's HEAD, set up as the quick start does."""
    tmp_path = tmp_path_factory.mktemp("newcomer")
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed: no clean clone to follow the quick start on")
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout: no clean clone to follow the quick start on")
    path = tmp_path / "clone"
    subprocess.run([git, "clone", "--quiet", str(ROOT), str(path)], check=True, timeout=120)
    setup = subprocess.run(
        ["scripts/setup"],
        cwd=path,
        env=newcomer_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
        check=False,
    )
    if setup.returncode != 0 and any(why in setup.stderr for why in UNREACHABLE):
        pytest.skip(f"the package index cannot be reached: {setup.stderr.strip()[-600:]}")
    assert setup.returncode == 0, setup.stderr[-4000:]
    assert "setting up .venv (once" in setup.stderr  # it says what happens, and that once
    assert (path / ".venv" / ".setup-stamp").exists()
    return path


def newcomer_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment, minus what would point the clone at another journal or venv."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("ORCHESTRATOR_DB", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # a registry of live daemons of its own
    return {**env, **extra}


@pytest.fixture
def daemon(clone: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``./scripts/up --headless`` in the clone, offline; its output in ``up.log``."""
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(
            ["./scripts/up", "--headless"],
            cwd=clone,
            env=newcomer_env(tmp_path, **OFFLINE),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        reap(proc)


def orchestrator(clone: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The clone's ``orchestrator`` command, from its root, as a second shell runs it."""
    return subprocess.run(
        [str(clone / ".venv" / "bin" / "orchestrator"), *args],
        cwd=clone,
        env=newcomer_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_quick_start_daemon_and_a_second_shell_share_one_journal(
    clone: Path, tmp_path: Path, daemon: subprocess.Popen[bytes]
) -> None:
    log = tmp_path / "up.log"

    def output() -> str:
        return log.read_text(errors="replace")

    def ready() -> dict[str, Any] | None:
        out = orchestrator(clone, tmp_path, "workflows", "--json")
        shown: dict[str, Any] = json.loads(out.stdout) if out.returncode == 0 else {}
        found = shown.get("daemon")
        return shown if found and found["ready"] and found["pid"] == daemon.pid else None

    loaded = eventually_blocking(
        alive(daemon, ready, "the daemon", output), what="the daemon", timeout=TIMEOUT
    )
    assert "orders" in {w["workflow_id"] for w in loaded["workflows"]}
    assert "setting up .venv" not in output()  # set up already: no pip, no network
    assert (clone / "orchestrator.db").exists()  # the journal every command uses

    emitted = orchestrator(clone, tmp_path, "emit", "order.created", '{"order_id": 7, "total": 12}')
    assert emitted.returncode == 0, emitted.stderr
    assert "no daemon" not in emitted.stderr

    def paused_order() -> list[dict[str, Any]] | None:
        out = orchestrator(clone, tmp_path, "runs", "--json", "--workflow", "orders")
        runs: list[dict[str, Any]] = json.loads(out.stdout) if out.returncode == 0 else []
        return [run for run in runs if run["status"] == "paused"] or None

    (run,) = eventually_blocking(
        alive(daemon, paused_order, "the order's run", output), what="the run", timeout=TIMEOUT
    )
    assert run["step"] is not None  # the daemon ran it up to the payment it waits for

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=TIMEOUT) == 0, output()
    assert "stopped cleanly" in output()


def test_an_interrupted_setup_is_done_again(clone: Path, tmp_path: Path) -> None:
    """Without its stamp (an install cut short), `.venv` is installed again, not trusted."""
    stamp = clone / ".venv" / ".setup-stamp"
    stamp.unlink()

    def setup(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["scripts/setup"],
            cwd=clone,
            env=newcomer_env(tmp_path, **extra),
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT,
            check=False,
        )

    offline = setup(**OFFLINE)  # it tries, and says why it cannot
    assert offline.returncode == 1
    assert "scripts/setup: the install failed" in offline.stderr
    assert not stamp.exists()
    again = setup()
    if again.returncode != 0 and any(why in again.stderr for why in UNREACHABLE):
        pytest.skip(f"the package index cannot be reached: {again.stderr.strip()[-600:]}")
    assert again.returncode == 0, again.stderr[-4000:]
    assert stamp.exists()
    assert setup(**OFFLINE).returncode == 0  # set up again: no pip

"""The commands each example's docstring tells a user to type, run as written.

Every ``examples/*.py`` docstring says how to drive it from another shell, "with the daemon
running (``orchestrator up examples/``)". Here that daemon runs (one for the module) in a
folder standing in for the repository's root, with a copy of examples/ and the default
journal, ``./orchestrator.db``; each example's commands run there in the order shown, and
the outcome the docstring tells of is checked. ``RUN_ID`` is the run id the line before
has you note. A line whose outcome shows later (a file a run writes, a run's status) is run
again until it does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import EXAMPLES
from documented import TIMEOUT, Shell
from procs import query

from orchestrator.testing import eventually_blocking

# What a line prints -> whether the documented outcome is there yet (a str: the RUN_ID to
# note), for the lines whose outcome is checked. Keyed by a part of the line.
Expect = dict[str, Callable[[str], object]]


def commands(example: str) -> list[list[str]]:
    """The command blocks of an example's docstring (the indented lines after a ``::``).

    As a user reads them in the file: the docstring's text, not the string's value (the
    two differ where a backslash stands).
    """
    doc = (EXAMPLES / f"{example}.py").read_text().split('"""')[1]
    found: list[list[str]] = []
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if line.endswith("::"):
            block = []
            for command in lines[index + 2 :]:
                if not command.startswith("    "):
                    break
                block.append(command.strip())
            found.append(block)
    return found


def rows(out: str) -> list[dict[str, str]]:
    """The rows of ``orchestrator runs``' table, by column name."""
    header, *lines = out.splitlines()
    names = re.split(r"\s{2,}", header.strip())
    return [dict(zip(names, re.split(r"\s{2,}", line.strip()), strict=False)) for line in lines]


def statuses(out: str) -> list[str]:
    return sorted(row["STATUS"] for row in rows(out))


class Session:
    """The daemon of the docstrings, and the commands typed beside it."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.run_id = ""

    def type(self, lines: list[str], expect: Expect | None = None) -> dict[str, str]:
        """Run `lines` in order; returns what each line with an expectation printed."""
        expect = dict(expect or {})
        printed: dict[str, str] = {}
        for line in lines:
            keys = [key for key in expect if key in line]
            assert len(keys) <= 1, (line, keys)
            command = line.replace("RUN_ID", self.run_id)
            if keys:
                printed[keys[0]] = self.until(command, expect.pop(keys[0]))
            else:
                out = self.shell.run(command)
                assert out.returncode == 0, f"{line!r} exited {out.returncode}:\n{out.stderr}"
        assert expect == {}, f"no line has {sorted(expect)}"
        return printed

    def until(self, command: str, met: Callable[[str], object]) -> str:
        """Run `command` until it exits 0 printing what `met` accepts; what it printed."""
        seen: list[str] = []

        def output() -> str | None:
            out = self.shell.run(command)
            seen[:] = [out.stdout + out.stderr]
            outcome = met(out.stdout) if out.returncode == 0 else None
            if isinstance(outcome, str):
                self.run_id = outcome
            return out.stdout if outcome else None

        return eventually_blocking(
            output,
            what=f"{command!r} to print what the docstring says",
            timeout=TIMEOUT,
            details=lambda: "".join(seen) + self.shell.log(),
        )

    def show(self, run_id: str) -> dict[str, Any]:
        out = self.shell.run(f"orchestrator show {run_id} --json")
        assert out.returncode == 0, out.stderr
        shown: dict[str, Any] = json.loads(out.stdout)
        return shown

    def final(self, run_id: str) -> dict[str, Any]:
        """The run, once it is final."""

        def ended() -> dict[str, Any] | None:
            run = self.show(run_id)
            return run if run["status"] in ("completed", "failed") else None

        return eventually_blocking(
            ended, what=f"run {run_id} to end", timeout=TIMEOUT, details=self.shell.log
        )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    shell = Shell(tmp_path_factory.mktemp("examples-root"))
    try:
        daemons = {
            line
            for path in sorted(EXAMPLES.glob("[!_]*.py"))
            for line in re.findall(r"``(orchestrator up [^`]+)``", path.read_text())
        }
        assert daemons == {"orchestrator up examples/"}, daemons
        shell.daemon(daemons.pop())
        yield Session(shell)
    finally:
        codes = shell.close()
    assert list(codes.values()) == [0], shell.log()


def newest(status: str, trigger: str | None = None) -> Callable[[str], str | None]:
    """Note the newest run listed with this status (and trigger)."""

    def noted(out: str) -> str | None:
        found = [
            row["RUN ID"]
            for row in rows(out)
            if row["STATUS"] == status and trigger in (None, row["TRIGGER"])
        ]
        return found[0] if found else None

    return noted


def test_every_example_has_commands() -> None:
    for path in sorted(EXAMPLES.glob("[!_]*.py")):
        assert commands(path.stem), f"{path.name}: no commands in its docstring"


def test_ingest_summarises_the_csv(session: Session) -> None:
    (lines,) = commands("ingest")
    printed = session.type(
        lines,
        {
            "cat examples/outbox/sales.json": lambda out: json.loads(out),
            "ls examples/inbox/done/": lambda out: out.split() == ["sales.csv"],
        },
    )
    summary = json.loads(printed["cat examples/outbox/sales.json"])
    assert summary == {
        "file": "sales.csv",
        "rows": 2,
        "columns": ["sku", "qty", "price"],
        "totals": {"qty": 3.0, "price": 29.5},
    }


def test_nightly_report_reports_now(session: Session) -> None:
    (lines,) = commands("nightly_report")
    printed = session.type(lines, {"cat examples/reports/": lambda out: json.loads(out)})
    report = json.loads(printed["cat examples/reports/"])
    assert set(report) == {"day", "files", "rows", "run"}


def test_an_order_ships_once_paid(session: Session) -> None:
    (lines,) = commands("orders")
    created, listed, paid, unpaid = lines
    session.type([created, listed], {"runs --workflow orders": newest("paused")})
    order = session.run_id
    session.type([paid])
    done = session.final(order)
    assert (done["status"], done["state"]["status"]) == ("completed", "shipped")
    before = session.type(["orchestrator runs --workflow orders"], {"runs": bool})
    event_id = session.shell.run(unpaid).stdout.strip()  # "no run: total is 0"
    db = session.shell.root / "orchestrator.db"
    eventually_blocking(
        lambda: query(db, "SELECT routed_at FROM events WHERE id = ?", (event_id,)) != [(None,)],
        what="the unpaid order's event to be routed",
        timeout=TIMEOUT,
    )
    after = session.type(["orchestrator runs --workflow orders"], {"runs": bool})
    assert len(rows(after["runs"])) == len(rows(before["runs"]))


def test_approval_by_event_then_by_hand(session: Session) -> None:
    request, by_event, by_hand = commands("approval")
    outcomes = []
    for decision in (by_event, by_hand):
        session.type(request, {"runs --workflow approval --status paused": newest("paused")})
        run_id = session.run_id
        session.type(decision)
        outcomes.append(session.final(run_id)["state"]["outcome"])
    assert outcomes == ["approved", "rejected"]


def test_deploys_queue_up(session: Session) -> None:
    (lines,) = commands("deploy")
    printed = session.type(
        lines,
        {
            "runs --workflow deploy": lambda out: len(rows(out)) == 2 and rows(out)[0]["RUN ID"],
            "cat examples/releases/api.log": lambda out: len(out.splitlines()) == 2,
        },
    )
    released = printed["cat examples/releases/api.log"].splitlines()
    assert [line.split()[1] for line in released] == ["1.4.2", "1.4.3"]
    # "one running (or paused), the other queued": the newer one waited its turn.
    second = session.final(session.run_id)
    assert second["state"]["version"] == "1.4.3"
    kinds = [entry["kind"] for entry in second["timeline"]]
    assert kinds.index("run.queued") < kinds.index("run.started"), kinds
    assert "step.failed" in kinds  # "flaky": its first push failed, and was retried
    first = session.final(rows(printed["runs --workflow deploy"])[1]["RUN ID"])
    assert "run.queued" not in [entry["kind"] for entry in first["timeline"]]


def test_the_consumer_drains_the_queue(session: Session) -> None:
    (lines,) = commands("consumer")
    printed = session.type(
        lines,
        {
            "runs --workflow consumer": lambda out: len(rows(out)) == 1,
            "cat examples/queue/done.log": lambda out: out.strip(),
        },
    )
    assert printed["cat examples/queue/done.log"].startswith("job-001.json resize run=")


def test_a_batch_fans_out_one_run_per_row(session: Session) -> None:
    (lines,) = commands("batch")
    printed = session.type(
        lines,
        {
            "runs --workflow batch": newest("completed", trigger="csv"),
            "show RUN_ID": lambda out: "children  3, 3 of them final" in out,
            "cat examples/batches/done/prices.json": lambda out: json.loads(out),
        },
    )
    summary = json.loads(printed["cat examples/batches/done/prices.json"])
    assert (summary["rows"], summary["priced"], summary["total"]) == (3, 2, 39.0)
    assert len(summary["failed"]) == 1


def test_alerts_note_a_failed_and_an_aborted_run(session: Session) -> None:
    (lines,) = commands("alerts")
    printed = session.type(
        lines,
        {
            "runs --workflow orders --status paused": newest("paused"),
            "cat examples/alerts/alerts.log": lambda out: "orders run" in out and "deploy" in out,
        },
    )
    log = printed["cat examples/alerts/alerts.log"]
    assert re.search(r"^deploy run \w+ failed \[STEP_FAILED\]", log, re.M), log
    assert re.search(rf"^orders run {session.run_id} aborted \[", log, re.M), log

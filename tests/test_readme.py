"""Every fenced code block of the README runs as written, or shows what a real command prints.

The blocks are found by position (`documented.blocks`); each is checked by its kind, and
a block no check claims fails `test_every_block_is_checked`:

- ``python``: a file, run with this Python in a folder of its own. One whose first line is
  ``# tests/NAME.py`` is a test file: those run under pytest, in a project with the
  README's ``# pyproject.toml`` block and a copy of examples/.
- ``bash``: the lines of every bash block, in README order, in one scratch folder standing
  in for the repository's root (a copy of examples/ in it), with ``orchestrator`` the
  command of this environment. Each exits 0. A line whose comment says "Ctrl-C" runs until
  Ctrl-C: ``orchestrator up`` in the background, the daemon the later lines talk to, sent
  SIGINT at the end of the module (it must exit 0, "cleanly"); any other until it printed
  its first line.
- ``toml``: parses; an ``orchestrator.toml`` (anything but ``# pyproject.toml``) is also
  read as a folder's configuration.
- ``json``: a real command's ``--json`` output (`JSON_OUTPUT`) has the documented shape:
  the same keys, at every level.
- ``text``: what a real command prints (`TEXT_OUTPUT`) reads as documented (see
  `documented.mismatch`).
- `NOT_RUN`: the quick start, with the reason.
- `ELSEWHERE`: the sections another test runs (three daemons on PostgreSQL:
  test_readme_postgres.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from documented import Block, Shell, blocks, mismatch, section
from procs import ROOT, Daemon

from orchestrator import Runtime, Workflow
from orchestrator.folder.loader import FolderConfig
from orchestrator.testing import eventually_blocking

README = blocks((ROOT / "README.md").read_text())
# The first command of a block that is not run here, and why.
NOT_RUN = {
    "./scripts/up": "the quick start sets up .venv, then runs the daemon with its dashboard "
    "(scripts/up) and this whole suite (scripts/test, which is what CI runs)",
    "litestream": "the disaster-recovery recipe needs the litestream program and an object "
    "store; test_a_journal_survives_what_litestream_does_to_it checks what it relies on",
}
# The README's sections whose blocks another test runs, and which.
ELSEWHERE = {
    "### Three daemons on one PostgreSQL, step by step": "tests/test_readme_postgres.py runs "
    "them against the suite's PostgreSQL server",
}
RUN_ELSEWHERE = {
    block.line: why
    for heading, why in ELSEWHERE.items()
    for block in section((ROOT / "README.md").read_text(), heading)
}
SKIPPED = {*NOT_RUN.values(), *ELSEWHERE.values()}
# The first key of a json block -> the command whose --json output it shows.
JSON_OUTPUT = {
    "run_id": ["runs", "--json"],
    "workflows": ["workflows", "--json"],
    "event_id": ["emit", "order.created", '{"order_id": 7, "total": 12}', "--json"],
}
TIMEOUT = 60.0


def of(info: str, *, tests: bool | None = None) -> list[Block]:
    """The README's blocks with this info string (python: test files or not)."""
    found = [block for block in README if block.info == info]
    if tests is not None:
        found = [block for block in found if block.first.startswith("# tests/") == tests]
    return found


def ids(block: Block) -> str:
    return f"line-{block.line}"


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    scratch = Shell(tmp_path_factory.mktemp("readme"))
    yield scratch
    codes = scratch.close()
    assert all(code == 0 for code in codes.values()), (codes, scratch.log())


def daemon_line() -> str:
    """The README's ``orchestrator up`` line."""
    (line,) = [
        line
        for block in of("bash")
        if checked_by(block) not in SKIPPED
        for line in block.text.splitlines()
        if line.startswith("orchestrator up ")
    ]
    return line


# -- every block is checked -----------------------------------------------------------------


def checked_by(block: Block) -> str | None:
    """Why `block` is checked (or deliberately not run), or None if nothing checks it."""
    first_command = block.first.split()[0] if block.first.strip() else ""
    if block.line in RUN_ELSEWHERE:
        return RUN_ELSEWHERE[block.line]
    if first_command in NOT_RUN:
        return NOT_RUN[first_command]
    if block.info in ("python", "bash", "toml", "yaml"):
        return block.info
    if block.info == "json":
        return " ".join(JSON_OUTPUT.get(next(iter(json.loads(block.text))), [])) or None
    if block.info == "text":
        return next((name for name, (first, _) in TEXT_OUTPUT.items() if first(block)), None)
    return None


def test_every_block_is_checked() -> None:
    unchecked = [
        f"{block} is not checked: {block.first!r}" for block in README if not checked_by(block)
    ]
    assert unchecked == [], (
        "\n".join(unchecked) + "\ngive it an info string this test runs (python, bash, toml), "
        "or the command whose output it shows (JSON_OUTPUT, TEXT_OUTPUT)"
    )


def test_a_broken_block_fails(tmp_path: Path) -> None:
    # The checks below can fail: an undefined name, in a block or in a step; a bash line
    # that fails; output that reads otherwise.
    broken = Block(1, 1, "python", 'print(payments.charge({"order_id": 7}))\n')
    out = run_python(broken, tmp_path)
    assert out.returncode == 1 and "NameError: name 'payments'" in out.stderr
    with pytest.raises(AssertionError, match="NameError"):  # in a step: a failed run
        test_a_python_block_runs_as_a_file(Block(2, 1, "python", STEP_FAILS), tmp_path)
    assert Shell(tmp_path / "shell").run("orchestrator show nope").returncode == 2
    assert mismatch("run ... of approval\n...\nstate", "run 3f9a61c2 of orders\nstate\n")
    assert not mismatch("run ... of approval\n...\nstate", "run 3f9a61c2 of approval\nstate\n")


def test_the_quick_start_names_the_scripts_it_runs() -> None:
    (quick_start,) = [block for block in README if block.first.startswith("./scripts/up")]
    scripts = [line.split()[0] for line in quick_start.text.splitlines()]
    for script in [ROOT / name for name in scripts if name.startswith("./scripts/")]:
        assert script.is_file() and os.access(script, os.X_OK), script


# -- python --------------------------------------------------------------------------------


def run_python(block: Block, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / f"block_{block.number}.py"
    path.write_text(block.text)
    return subprocess.run(
        [sys.executable, path.name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


STEP_FAILS = """\
import asyncio

from orchestrator import Runtime, Workflow


def charge(state):
    return payments.charge(state)


async def main():
    async with Runtime("fails.db", workflows=[Workflow(id="w", pipelines={"p": [charge]})]) as rt:
        print((await rt.invoke("w", "p", {})).status)


asyncio.run(main())
"""


@pytest.mark.parametrize("block", of("python", tests=False), ids=ids)
def test_a_python_block_runs_as_a_file(block: Block, tmp_path: Path) -> None:
    out = run_python(block, tmp_path)
    assert out.returncode == 0, f"{block}:\n{out.stderr}"
    # A failed step is a warning on stderr, not an exit code: only those raised on purpose.
    for error in set(re.findall(r"\b\w+(?:Error|Exception)\b", out.stderr)):
        assert f"raise {error}(" in block.text, f"{block}: {error}:\n{out.stderr}"


def test_the_test_files_pass_under_pytest(tmp_path: Path, examples: Path) -> None:
    (pyproject,) = [block for block in of("toml") if block.first == "# pyproject.toml"]
    (tmp_path / "pyproject.toml").write_text(pyproject.text)
    (tmp_path / "tests").mkdir()
    tests = of("python", tests=True)
    for block in tests:
        (tmp_path / block.first.removeprefix("# ")).write_text(block.text)
    assert examples == tmp_path / "examples"  # where the tests look for their files
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    count = sum(len(re.findall(r"^async def test_|^def test_", b.text, re.M)) for b in tests)
    assert f"{count} passed" in out.stdout, out.stdout


# -- toml ----------------------------------------------------------------------------------


@pytest.mark.parametrize("block", of("toml"), ids=ids)
def test_a_toml_block_parses(block: Block, tmp_path: Path) -> None:
    tomllib.loads(block.text)
    if block.first != "# pyproject.toml":  # a folder's orchestrator.toml
        (tmp_path / "orchestrator.toml").write_text(block.text)
        FolderConfig.read(tmp_path)


# -- bash ----------------------------------------------------------------------------------


def test_the_bash_blocks_run_in_sequence(shell: Shell) -> None:
    for block in of("bash"):
        if checked_by(block) in SKIPPED:
            continue
        for line in block.text.splitlines():
            comment = line.partition("#")[2]
            if line.startswith("orchestrator up ") and "Ctrl-C" in comment:
                shell.daemon(line)
            elif "Ctrl-C" in comment:
                shell.until_first_line(line)
            else:
                out = shell.run(line)
                assert out.returncode == 0, f"{block}: {line!r} exited {out.returncode}:\n{out}"


# -- yaml: the Litestream recipe's configuration ---------------------------------------------


def test_the_yaml_block_replicates_the_journal_the_recipe_restores() -> None:
    (config,) = of("yaml")
    assert config.text.startswith("dbs:\n") and "    replicas:\n" in config.text
    paths = re.findall(r"^\s*- path: (\S+)$", config.text, re.MULTILINE)
    urls = re.findall(r"^\s*- url: (\S+)$", config.text, re.MULTILINE)
    assert paths == ["orchestrator.db"] and len(urls) == 1, config.text  # the default journal
    (recipe,) = [block for block in of("bash") if block.first.startswith("litestream restore ")]
    restore, *_, daemon = recipe.text.splitlines()
    assert restore.endswith(f"-o {paths[0]} {paths[0]}"), restore
    assert daemon.startswith("orchestrator up ") and "--db" not in daemon, daemon


# -- json: the shape of real output --------------------------------------------------------


def unmatched(doc: Any, reals: list[Any], path: str = "") -> list[str]:
    """Where `doc` has keys that no real value at its path has (lists: any of their items)."""
    if isinstance(doc, list):
        items = [item for real in reals if isinstance(real, list) for item in real]
        return [problem for one in doc for problem in unmatched(one, items, f"{path}[]")]
    if not isinstance(doc, dict):
        return []
    same = [real for real in reals if isinstance(real, dict) and set(real) == set(doc)]
    if not same:
        there = [sorted(real) for real in reals if isinstance(real, dict)]
        return [f"{path or 'the output'}: documented {sorted(doc)}, real {there}"]
    return [
        problem
        for key, value in doc.items()
        for problem in unmatched(value, [real[key] for real in same], f"{path}.{key}")
    ]


def test_unmatched_finds_a_missing_key() -> None:
    assert unmatched({"a": [{"b": 1}]}, [{"a": [{"b": 2}, {"c": 3}]}]) == []
    assert unmatched({"a": [{"b": 1, "x": 0}]}, [{"a": [{"b": 2}]}]) == [
        ".a[]: documented ['b', 'x'], real [['b']]"
    ]


@pytest.mark.parametrize("block", of("json"), ids=ids)
def test_a_json_block_has_the_shape_of_the_real_output(block: Block, shell: Shell) -> None:
    documented = json.loads(block.text)
    command = JSON_OUTPUT[next(iter(documented))]
    db = shell.daemon(daemon_line())
    broken = shell.root / "examples" / "broken.py"
    broken.write_text("def oops(:\n")  # so that `errors` has an entry
    try:
        shell.run(f"orchestrator emit order.created '{{\"order_id\": {block.line}}}'")

        def output() -> Any:
            out = shell.run(f"orchestrator {shlex.join(command)} --db {db.name}")
            assert out.returncode == 0, out.stderr
            real = json.loads(out.stdout)
            # `workflows` once `errors` has its entry; `emit` once its event is routed
            wanted = ("errors", "routed")
            if isinstance(real, dict) and not any(real.get(key) for key in wanted):
                return None
            return real or None

        real = eventually_blocking(output, what=f"{command} output", timeout=TIMEOUT)
    finally:
        broken.unlink()
    problems = unmatched(documented, real if isinstance(real, list) else [real])
    assert problems == [], f"{block}: " + "\n".join(problems)


# -- text: what real commands print --------------------------------------------------------


def ambiguous_prefix(block: Block, folder: Path) -> str:
    """The ``$ orchestrator abort abcd`` session: on runs whose ids the block shows."""
    documented = re.findall(r"^  (abcd[0-9a-f]{28})  orders  (\w+)$", block.text, re.M)
    count = int(re.findall(r"(\d+) runs start with it", block.text)[0])
    # Listed after the ones shown: candidates are listed by id.
    fillers = [f"abcdf{n:027x}" for n in range(count - len(documented))]
    run_ids = iter([run_id for run_id, _ in documented] + fillers)
    statuses = [status for _, status in documented] + ["completed"] * len(fillers)

    def hold(state: dict[str, Any], ctx: Any) -> Any:
        return ctx.pause(event="go")

    def done(state: dict[str, Any]) -> dict[str, Any]:
        return state

    orders = Workflow(id="orders", pipelines={"paused": [hold], "completed": [done]})

    async def seed() -> None:
        async with Runtime(folder / "orchestrator.db", workflows=[orders]) as rt:
            for status in statuses:
                assert (await rt.invoke("orders", status, {})).status == status

    with mock.patch("orchestrator.engine.admission.make_id", lambda: next(run_ids)):
        asyncio.run(seed())
    shell = Shell(folder / "root")
    shutil.move(folder / "orchestrator.db", shell.root / "orchestrator.db")
    out = shell.run(block.first.removeprefix("$ "))
    assert out.returncode == 2, out
    return f"{block.first}\n{out.stdout}{out.stderr}"


def tried(block: Block, folder: Path) -> str:
    """What the README's ``orchestrator try`` line of approval.py prints."""
    (line,) = [
        line
        for bash in of("bash")
        for line in bash.text.splitlines()
        if line.startswith("orchestrator try examples/approval.py ")
    ]
    out = Shell(folder).run(line)
    assert out.returncode == 0, out.stderr
    return out.stdout


BILLING = '''\
"""A workflow whose step raises, for the README's `orchestrator logs` output.

Its step raises at line 14 of this file, as in the README: the card of order 7 is
declined, so its run fails at step charge; every other order is charged and its run
completes.
"""

from orchestrator import Workflow


def charge(state, ctx):
    ctx.log.info("charging order %s", state["order_id"])
    if state["order_id"] == 7:
        raise ValueError("card declined")
    return state


workflow = Workflow(id="billing", pipelines={"pay": [charge]})
'''


def logged(block: Block, folder: Path) -> str:
    """``orchestrator logs`` of a run whose step raised, its file in /srv/flows."""
    flows = folder / "flows"
    flows.mkdir()
    (flows / "billing.py").write_text(BILLING)
    db = folder / "orchestrator.db"

    async def fail() -> str:
        async with Runtime(db, workflows_dir=flows) as rt:
            result = await rt.invoke("billing", "pay", {"order_id": 7})
            assert result.error_code == "STEP_FAILED", result
            return result.run_id

    run_id = asyncio.run(fail())
    out = Shell(folder / "root").run(f"orchestrator logs {run_id} --db {db}")
    assert out.returncode == 0, out.stderr
    return out.stdout.replace(str(flows), "/srv/flows")


def emitted(block: Block, folder: Path) -> str:
    """The README's ``$ orchestrator emit`` session, against a daemon on examples/."""
    shell = Shell(folder)
    db = folder / "orchestrator.db"
    transcript = []
    with Daemon(folder / "examples", db).start():
        for line in block.text.splitlines():
            if line.startswith("$ "):
                out = shell.run(f"{line.removeprefix('$ ')} --db {db}")
                assert out.returncode == 0, out.stderr
                transcript.append(f"{line}\n{out.stdout}{out.stderr}")
    return "".join(transcript)


# name -> (does a text block show it, what the real command prints)
TEXT_OUTPUT: dict[str, tuple[Callable[[Block], bool], Callable[[Block, Path], str]]] = {
    "an ambiguous run id prefix": (
        lambda block: block.first == "$ orchestrator abort abcd",
        ambiguous_prefix,
    ),
    "orchestrator try": (lambda block: " of approval (trigger request)" in block.first, tried),
    "orchestrator logs": (lambda block: "info [charge] charging order 7" in block.first, logged),
    "orchestrator emit": (lambda block: block.first.startswith("$ orchestrator emit "), emitted),
}


@pytest.mark.parametrize("block", of("text"), ids=ids)
def test_a_text_block_shows_what_the_command_prints(block: Block, tmp_path: Path) -> None:
    outputs = [output for shows, output in TEXT_OUTPUT.values() if shows(block)]
    assert len(outputs) == 1, f"{block}: {len(outputs)} entries of TEXT_OUTPUT show it"
    (real,) = outputs
    problem = mismatch(block.text, real(block, tmp_path))
    assert problem is None, f"{block}: {problem}"

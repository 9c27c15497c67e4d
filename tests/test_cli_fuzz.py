"""The CLI under arbitrary arguments: never a traceback, and bad input is one line, exit 2.

`orchestrator.cli.main.main` runs in this process with stdout and stderr captured, on a
real journal (a paused run, a completed one, events); no daemon is needed, the writing
commands journal into the inbox. Arguments come from text and from bytes decoded the way
Linux hands them to Python (each byte that is not UTF-8 as a lone surrogate).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator import Runtime, Workflow
from orchestrator.cli.main import main


async def inc(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "n": state.get("n", 0) + 1}


def wait(state: dict[str, Any], ctx: Any) -> Any:
    return ctx.pause(event="go", into="go")


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    db = tmp_path_factory.mktemp("fuzz") / "j.db"

    async def seed() -> list[str]:
        flow = Workflow(id="w", pipelines={"go": [inc], "wait": [wait, inc]})
        async with Runtime(db, workflows=[flow]) as rt:
            done = await rt.invoke("w", "go", {"n": 1})
            paused = await rt.invoke("w", "wait", {"n": 1})
            return [done.run_id, paused.run_id]

    return db, asyncio.run(seed())


@pytest.fixture(autouse=True)
def _elsewhere(journal: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    # An argument may be "--db" itself: whatever it names is made in the journal's folder.
    monkeypatch.chdir(journal[0].parent)
    monkeypatch.delenv("ORCHESTRATOR_DB", raising=False)


# What a shell can pass: any bytes but NUL, decoded as Python decodes argv on Linux.
from_bytes = st.binary(max_size=40).map(
    lambda b: b.replace(b"\0", b"").decode("utf-8", "surrogateescape")
)
texts = st.one_of(st.text(max_size=40), from_bytes)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
tricky_json = st.sampled_from(
    [
        '{"a": "\\udc80"}',
        '{"n": ' + "1" * 5000 + "}",
        "[" * 100_000,
        '{"a": NaN}',
        '{"a": 1e999}',
        '{"a": 1}\n{"b": 2}',
        "{" * 5000 + "}" * 5000,
        '{"\x1b]0;pwned\x07": "\x1b[2J"}',
    ]
)
objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(json.dumps)
# Mostly JSON objects (the input that gets furthest), then any JSON, text, known traps.
jsons = st.one_of(objects, objects, objects, json_values.map(json.dumps), texts, tricky_json)


@st.composite
def argvs(draw: st.DrawFn, run_ids: list[str]) -> list[str]:
    run_id = draw(st.one_of(st.sampled_from(run_ids), texts))
    data = draw(st.lists(jsons, max_size=1))
    command = draw(
        st.sampled_from(
            ["emit", "invoke", "resume", "signal", "abort", "show", "runs", "workflows"]
        )
    )
    if command == "emit":
        args = [draw(st.one_of(st.just("order.created"), texts)), *data]
    elif command == "invoke":
        workflow = draw(st.one_of(st.just("w"), texts))
        args = [workflow, draw(st.one_of(st.sampled_from(["go", "wait"]), texts)), *data]
    elif command in ("resume", "signal"):
        args = [run_id, *data]
    elif command in ("abort", "show"):
        args = [run_id]
    elif command == "runs":
        limit = st.one_of(st.integers().map(str), texts, st.just("99999999999999999999"))
        status = st.one_of(st.sampled_from(["paused", "completed"]), texts)
        args = draw(
            st.lists(
                st.one_of(
                    st.tuples(st.just("--limit"), limit),
                    st.tuples(st.just("--status"), status),
                    st.tuples(st.just("--workflow"), st.one_of(st.just("w"), texts)),
                ),
                max_size=3,
            ).map(lambda pairs: [part for pair in pairs for part in pair])
        )
    else:
        args = []
    if command in ("runs", "show", "workflows") and draw(st.booleans()):
        args.append("--json")
    extra = [draw(texts)] if draw(st.integers(0, 9)) == 0 else []
    return [command, *args, *extra]


@contextlib.contextmanager
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def call(argv: list[str]) -> tuple[int, str, str]:
    with captured() as (out, err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
        else:  # pragma: no cover - main always exits
            raise AssertionError("main returned instead of exiting")
    assert isinstance(code, int), code
    return code, out.getvalue(), err.getvalue()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_cli_never_shows_a_traceback(
    journal: tuple[Path, list[str]], data: st.DataObject
) -> None:
    db, run_ids = journal
    argv = [*data.draw(argvs(run_ids)), "--db", str(db)]
    code, out, err = call(argv)
    event(f"{argv[0]}: exit {code}")
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 1, 2), (argv, code, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    assert "\x1b" not in out + err and "\x07" not in out + err, (argv, out, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["emit", "t", '{"n": ' + "1" * 5000 + "}"],
        ["emit", "t", "[" * 100_000],
        ["emit", "t", '{"a": "\\udc80"}'],
        ["emit", "t\udcff"],
        ["emit", "t", '{"a": "\udcff"}'],
        ["abort", "r\udcfe"],
        ["show", "r\udcfe"],
        ["resume", "r\ud800"],
        ["runs", "--limit", "-" + "1" * 5000],
        ["runs", "--limit", "1" * 5000 + "x"],
        ["runs", "--workflow", "w\x00"],
    ],
)
def test_known_bad_input_in_process(journal: tuple[Path, list[str]], argv: list[str]) -> None:
    code, out, err = call([*argv, "--db", str(journal[0])])
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err

"""Checkpoints stored as merge patches against a snapshot read back as exactly their state.

The property test writes random sequences of states through the real writer and reads every
checkpoint back through the real reader: text for text. The runtime tests check what a run,
`show`, retry, fork, prune and a journal written before deltas read on real journals.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from procs import query

from orchestrator import Runtime, Step, Workflow
from orchestrator.journal import deltas as neutral_deltas
from orchestrator.journal import ops
from orchestrator.journal.sqlite import deltas, schema
from orchestrator.journal.sqlite.deltas import Deltas, merge_patch
from orchestrator.journal.sqlite.reader import JournalReader
from orchestrator.journal.sqlite.writer import GroupCommitWriter
from orchestrator.records import RunStatus
from orchestrator.state import encode_state

BIG = "x" * 2000  # makes a state large enough to be written as patches

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
)
keys = st.sampled_from(["a", "b", "c", "d", "é", "日本", "k\n", ""])
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def state_sequences(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A run's states: each the previous one with a few keys set, removed or nested changed."""
    state: dict[str, Any] = draw(st.dictionaries(keys, values, max_size=5))
    if draw(st.booleans()):
        state["pad"] = BIG if draw(st.booleans()) else "y" * draw(st.integers(0, 4000))
    states = [state]
    for _ in range(draw(st.integers(1, 6))):
        state = json.loads(json.dumps(state))
        for _ in range(draw(st.integers(0, 3))):
            key = draw(keys)
            action = draw(st.sampled_from(["set", "remove", "nest", "pad"]))
            if action == "set":
                state[key] = draw(values)
            elif action == "remove":
                state.pop(key, None)
            elif action == "nest":
                inner = state.get(key)
                inner = inner if isinstance(inner, dict) else {}
                inner[draw(keys)] = draw(values)
                state[key] = inner
            else:
                state["pad"] = "z" * draw(st.integers(0, 5000))
        states.append(state)
    return states


async def write_and_read(path: Path, states: list[dict[str, Any]]) -> list[str]:
    """Each state as the checkpoint of one run, written by the writer, read by the reader."""
    writer = GroupCommitWriter(path, synchronous="NORMAL")
    await writer.open()
    task = asyncio.create_task(writer.run())
    texts = [encode_state(state) for state in states]
    try:
        await writer.write(
            ops.create_run(
                1,
                "r1",
                "w",
                "go",
                "v",
                status=RunStatus.RUNNING,
                first_step="s1",
                state=texts[0],
                at=1,
            )
        )
        for position, text in enumerate(texts[1:], 1):
            # Alternately one batch per checkpoint and several checkpoints in one batch.
            batch = ops.checkpoint(
                1,
                position,
                f"s{position}",
                started_at=position,
                ended_at=position,
                state=text,
                next_step=None,
            )
            if position % 2:
                await writer.write(batch)
            else:
                writer.enqueue(batch)
        await writer.flush()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()
    reader = await JournalReader.open(path)
    try:
        stored = await reader.stored_checkpoints("r1")
        shown = await reader.checkpoints("r1")
        run = await reader.get_run("r1")
    finally:
        await reader.close()
    assert [c.state for c in shown] == [json.loads(text) for text in texts]
    assert run is not None and run.state == json.loads(texts[-1])
    return [c.state for c in stored]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states=state_sequences())
def test_every_checkpoint_reads_back_as_exactly_its_state(states: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.db"
        read = asyncio.run(write_and_read(path, states))
        assert read == [encode_state(state) for state in states]
        # No checkpoint needs more than its snapshot: a patch's base is whole.
        rows = query(
            path,
            "SELECT c.base FROM checkpoints c JOIN checkpoints b"
            " ON b.run = c.run AND b.position = c.base WHERE c.base < c.position"
            " AND b.base IS NOT NULL AND b.base != b.position",
        )
        assert rows == []


def test_a_patch_gives_back_the_state_or_none_is_made() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2}, "e": [None]}) == {
        "b": {"d": None},
        "e": [None],
    }
    assert merge_patch({"a": 1}, {"a": None}) is None  # null would remove the key
    assert merge_patch({"a": 1, "b": 2}, {"b": 2, "a": 1}) is None  # keys moved
    assert merge_patch({"a": 1}, {"a": 1.0}) == {"a": 1.0}  # 1 and 1.0 are written apart
    assert merge_patch({"a": 0.0}, {"a": -0.0}) == {"a": -0.0}
    assert merge_patch({"a": True}, {"a": 1}) == {"a": 1}


def test_a_batch_that_does_not_commit_leaves_no_snapshot_behind() -> None:
    cache = Deltas()
    text = json.dumps({"pad": BIG})
    row = (1, 0, None, 1, 1, text, "step")
    whole = ([(1, 0, None, 1, 1, "", "step", 0)], [(deltas.snapshot_id(1, 0), text)])
    assert cache.encode([row]) == whole  # a snapshot, in `snapshots`
    cache.discard()
    assert len(cache) == 0
    assert cache.encode([row]) == whole
    cache.commit()
    [patch], spilled = cache.encode([(1, 1, "s1", 2, 2, json.dumps({"pad": BIG, "n": 1}), "step")])
    assert patch[5] == '{"n":1}' and patch[-1] == 0 and spilled == []
    cache.forget([1])
    cache.commit()
    assert len(cache) == 0


def test_the_cache_keeps_at_most_its_size_of_snapshot_text() -> None:
    cache = Deltas(cache_chars=5_000)
    for run in range(1, 6):
        cache.encode([(run, 0, None, 1, 1, json.dumps({"pad": BIG}), "step")])
        cache.commit()
    assert len(cache) == 2  # the oldest runs' snapshots left the cache


def step_changing(name: str) -> Step:
    def step(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, name: len(state)}

    return Step(step, name=name, inline=True)


def three_steps(broken: list[bool] | None = None) -> Workflow:
    def b(state: dict[str, Any]) -> dict[str, Any]:
        if broken and broken[0]:
            raise RuntimeError("b is broken")
        return {**state, "b": 1}

    return Workflow(
        id="w",
        pipelines={"go": [step_changing("a"), Step(b, name="b", inline=True), step_changing("c")]},
    )


def big_input() -> dict[str, Any]:
    """A 2 KB state of many fields; each step changes one."""
    return {f"field{i:03}": "v" * 20 for i in range(80)}


def checkpoint_bytes(db: Path) -> list[tuple[int, int | None]]:
    return [
        (int(n), base)
        for n, base in query(
            db, "SELECT length(CAST(state AS BLOB)), base FROM checkpoints ORDER BY run, position"
        )
    ]


async def test_a_run_over_a_large_state_journals_what_its_steps_change(db: Path) -> None:
    async with Runtime(db, workflows=[three_steps()]) as rt:
        result = await rt.invoke("w", "go", big_input())
        assert result.status == "completed"
        assert result.state == {**big_input(), "a": 80, "b": 1, "c": 82}
    rows = checkpoint_bytes(db)
    assert rows[0] == (0, 0)  # the input, whole in `snapshots`
    assert [len(text) for (text,) in query(db, "SELECT state FROM snapshots")] == [
        len(encode_state(big_input()))
    ]
    assert all(base == 0 and size < 40 for size, base in rows[1:])  # then patches on it
    reader = await JournalReader.open(db)
    try:
        shown = await reader.checkpoints(result.run_id)
    finally:
        await reader.close()
    assert [c.state.get("c") for c in shown] == [None, None, None, 82]
    assert shown[2].state == {**big_input(), "a": 80, "b": 1}


async def test_retry_and_fork_from_a_step_read_states_stored_as_patches(db: Path) -> None:
    broken = [True]
    async with Runtime(db, workflows=[three_steps(broken)]) as rt:
        failed = await rt.invoke("w", "go", big_input())
        assert failed.status == "failed"
        broken[0] = False
        retried = await rt.retry(failed.run_id, {"patched": True})
        assert retried.state == {**big_input(), "a": 80, "patched": True, "b": 1, "c": 83}
        fork = await rt.fork(failed.run_id, from_step="c", patch={"forked": 1})
        forked = await rt.wait(fork, timeout=10)
        assert forked.state == {
            **big_input(),
            "a": 80,
            "patched": True,
            "b": 1,
            "forked": 1,
            "c": 84,
        }
        fork_b = await rt.wait(await rt.fork(failed.run_id, from_step="b"), timeout=10)
        # Before b's checkpoint of the retried run: the retry's patch is in it.
        assert fork_b.state == {**big_input(), "a": 80, "patched": True, "b": 1, "c": 83}
    assert sum(1 for _, base in checkpoint_bytes(db) if base is not None) >= 6


async def test_prune_takes_a_run_with_its_snapshots_and_patches(db: Path) -> None:
    async with Runtime(db, workflows=[three_steps()]) as rt:
        first = await rt.invoke("w", "go", big_input())
        counts = await rt.prune(0)
        assert counts["runs"] == 1 and counts["checkpoints"] == 4
        kept = await rt.invoke("w", "go", big_input())
        assert (await rt.wait(kept.run_id)).state == kept.state
        assert query(db, "SELECT count(*) FROM checkpoints") == [(4,)]
        # The pruned run's snapshot went with it (a trigger); the kept run's is there.
        assert query(db, "SELECT id FROM snapshots") == [(deltas.snapshot_id(2, 0),)]
        assert first.run_id not in {run.run_id for run in await rt.list_all_runs()}


hold = asyncio.Event()


async def hold_then_change(state: dict[str, Any]) -> dict[str, Any]:
    hold.set()
    await asyncio.sleep(3600)  # until the runtime stops: the run is left running here
    return state


async def test_a_journal_written_before_deltas_recovers_shows_and_forks(db: Path) -> None:
    global hold
    hold = asyncio.Event()
    waiting = Workflow(
        id="w", pipelines={"go": [step_changing("a"), Step(hold_then_change, name="b")]}
    )
    async with Runtime(db, workflows=[waiting], shutdown_grace=0.01) as rt:
        pending = asyncio.ensure_future(rt.invoke("w", "go", big_input()))
        pending.add_done_callback(lambda task: task.exception())  # RuntimeStopped
        await asyncio.wait_for(hold.wait(), 10)
    # The journal before migrations 17 and 18: whole states, no `base` column.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"UPDATE checkpoints SET state = ({deltas.state_of('checkpoints')}), base = NULL")
    conn.execute("ALTER TABLE checkpoints DROP COLUMN base")
    conn.execute("DROP TRIGGER runs_snapshots")
    conn.execute("DROP TABLE snapshots")
    conn.execute("PRAGMA user_version = 16")
    for trigger in ("run_counts_insert", "run_counts_update", "run_counts_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE run_counts")
    conn.execute("DROP INDEX runs_errors")
    conn.close()

    async with Runtime(db, workflows=[three_steps()]) as rt:
        [run] = await rt.list_all_runs()
        result = await rt.wait(run.run_id, timeout=10)
        assert result.state == {**big_input(), "a": 80, "b": 1, "c": 82}
        fork = await rt.wait(await rt.fork(run.run_id, from_step="b"), timeout=10)
        assert fork.state == result.state
    reader = await JournalReader.open(db)  # what `show` reads
    try:
        shown = await reader.checkpoints(run.run_id)
    finally:
        await reader.close()
    assert [c.state for c in shown] == [
        big_input(),
        {**big_input(), "a": 80},
        {**big_input(), "a": 80, "b": 1},
        result.state,
    ]
    assert query(db, "PRAGMA user_version") == [(len(schema.MIGRATIONS),)]
    rows = query(db, "SELECT position, base FROM checkpoints WHERE run = 1 ORDER BY position")
    # Written before: whole; after recovery: the first checkpoint whole, then patches.
    assert rows == [(0, None), (1, None), (2, 2), (3, 2)]


@pytest.mark.parametrize("size", [100, 600])
def test_small_states_are_written_whole(size: int) -> None:
    cache = Deltas()
    first = (1, 0, None, 1, 1, json.dumps({"pad": "p" * size}), "step")
    cache.encode([first])
    cache.commit()
    [second], _ = cache.encode([(1, 1, "s", 2, 2, json.dumps({"pad": "p" * size, "n": 1}), "step")])
    assert (second[-1] is None) == (size < deltas.MIN_DELTA_CHARS)


def test_states_too_large_to_parse_quickly_are_written_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(neutral_deltas, "MAX_DELTA_CHARS", 1_000)
    cache = Deltas()
    text = json.dumps({"pad": BIG})
    cache.encode([(1, 0, None, 1, 1, text, "step")])
    cache.commit()
    assert len(cache) == 0  # not kept: nothing will be a patch against it
    written, spilled = cache.encode([(1, 1, "s", 2, 2, json.dumps({"pad": BIG, "n": 1}), "step")])
    assert written[0][-1] == 1 and len(spilled) == 1  # whole, in `snapshots`

"""Hypothesis over the API's payload entries: any value is either refused where it enters
(a `ValidationError`, the runtime unharmed) or journaled and handed back exactly."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from orchestrator import Runtime, Trigger, ValidationError, Workflow
from orchestrator.state import StateEncodingError, decode_state, encode_state, parse_payload

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None), max_size=20),  # lone surrogates included
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(codec=None), max_size=8), inner, max_size=4
        )
    ),
    max_leaves=40,
)
payloads = st.one_of(
    st.dictionaries(st.text(max_size=8), values, max_size=5),
    values,
    st.integers(min_value=1, max_value=300).map(lambda n: _deep(n)),
)


def _deep(levels: int) -> dict[str, Any]:
    value: Any = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def keep(state: dict[str, Any]) -> dict[str, Any]:
    return state


def _accepted(value: Any) -> bool:
    try:
        encode_state(value)
    except StateEncodingError:
        return False
    return True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_encoding_and_parsing_agree_on_every_value(value: Any) -> None:
    """What `encode_state` writes, `parse_payload` (readers, the CLI) reads back as is."""
    try:
        text = encode_state(value)
    except StateEncodingError:
        return
    assert _same(value, parse_payload(text))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.sampled_from(["", " ", "\n", " x", "}", ",1"]))
def test_a_checkpoint_decodes_as_json_reads_it(value: Any, around: str) -> None:
    """`decode_state` (the scanner alone on a whole text) reads what `json.loads` reads."""
    try:
        text = encode_state(value)
    except StateEncodingError:
        return
    for candidate in (text, around + text, text + around):
        try:
            expected: Any = json.loads(candidate)
        except ValueError:
            expected = StateEncodingError
        try:
            got: Any = decode_state(candidate)
        except StateEncodingError:
            got = StateEncodingError
        assert expected is got is StateEncodingError or _same(expected, got), candidate


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=6))
def test_emit_and_invoke_refuse_or_keep_any_payload(
    tmp_path_factory: Any, batch: list[Any]
) -> None:
    db: Path = tmp_path_factory.mktemp("fuzz") / "journal.db"
    flow = Workflow(id="w", pipelines={"go": [keep]}, triggers={"go": Trigger("t")})

    async def scenario() -> None:
        async with Runtime(db, workflows=[flow]) as rt:
            for value in batch:
                ok = isinstance(value, dict) and _accepted(value)
                for enter in (rt.emit("t", value), rt.invoke("w", "go", value)):
                    try:
                        outcome = await enter
                    except ValidationError:
                        assert not ok or value is None
                        continue
                    if isinstance(outcome, str):
                        continue  # an event id: its run is checked below
                    assert outcome.ok == ok or value is None, outcome
                    if ok:
                        assert _same(value, outcome.state)
            await rt.idle()
            for run in await rt.list_runs(limit=-1):
                assert run.status in ("completed", "failed")
            # Still serving after all of it.
            assert (await rt.invoke("w", "go", {"n": 1})).state == {"n": 1}

    asyncio.run(scenario())

"""A batch kept as rows by statement still knows each caller's rows (for a refused batch)."""

from __future__ import annotations

from orchestrator.errors import JournalError
from orchestrator.journal.ops import Stmt
from orchestrator.journal.writing import CallersByStatement, Rows, Together

A, B, C = list(Stmt)[:3]


async def test_each_caller_gets_back_exactly_its_rows_in_order() -> None:
    callers, rows, together = CallersByStatement(), Rows(), Together()
    first = callers.join_rows(rows, [(A, (1,)), (B, (2,)), (A, (3,))], together)
    second = callers.join_rows(rows, [(C, (4,))], together)
    with together:  # a block is one caller, however many enqueues it makes
        third = callers.join_rows(rows, [(B, (5,))], together)
        again = callers.join_rows(rows, [(A, (6,)), (C, (7,))], together)
    assert first and second and third and third is again and len({first, second, third}) == 3
    assert rows == {A: [(1,), (3,), (6,)], B: [(2,), (5,)], C: [(4,), (7,)]}
    assert list(callers.each_rows(rows)) == [
        {A: [(1,), (3,)], B: [(2,)]},
        {C: [(4,)]},
        {B: [(5,)], A: [(6,)], C: [(7,)]},
    ]
    callers.settle(None, [None, JournalError("refused")])
    assert first.done() and second.exception() is not None and third.done()


async def test_a_caller_that_awaits_nothing_has_no_future_but_keeps_its_rows() -> None:
    callers, rows, together = CallersByStatement(), Rows(), Together()
    quiet = callers.join_rows(rows, [(A, (1,)), (B, (2,))], together, wanted=False)
    waiting = callers.join_rows(rows, [(A, (3,))], together)
    with together:  # the block wants a future once one of its enqueues does
        first = callers.join_rows(rows, [(B, (4,))], together, wanted=False)
        later = callers.join_rows(rows, [(C, (5,))], together)
        last = callers.join_rows(rows, [(A, (6,))], together, wanted=False)
    assert quiet is None and first is None and waiting is not None
    assert later is not None and last is later
    assert list(callers.each_rows(rows)) == [
        {A: [(1,)], B: [(2,)]},
        {A: [(3,)]},
        {B: [(4,)], C: [(5,)], A: [(6,)]},
    ]
    callers.settle(JournalError("stopped"), [JournalError("refused")])
    assert waiting.exception() is not None and later.exception() is not None

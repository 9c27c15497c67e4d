"""The cost of the payload bounds per emit: what checking a payload adds to an `emit`.

Every payload entering the runtime (emit, invoke, resume, signal, what a step returns)
passes `encode_state`: JSON encoding plus the bounds (depth, 64-bit integers, size, valid
Unicode). The bounds are the part beyond `json.dumps`. This script measures, for a small,
a typical and a large event payload:

- **emit**: µs per `await rt.emit(...)` of that payload, sequential, on a fresh journal at
  the default durability (`synchronous="FULL"`), no trigger listening (the cost of an
  event alone, the smallest an emit gets, so the share below is an upper bound);
- **dumps**: µs of plain `json.dumps` of the payload (what encoding costs anyway);
- **encode_state**: µs of `encode_state` (dumps + bounds);
- **bounds share**: (encode_state - dumps) / emit. Goal: under 5%.

Run: ``python bench/bench_bounds.py`` (``--quick`` for a smoke run). Medians of 5 rounds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

from common import fresh_dir, machine_line, parse_args

from orchestrator import Runtime
from orchestrator.state import encode_state


def payloads() -> dict[str, dict[str, Any]]:
    item = {"sku": "A-1234", "qty": 3, "price": 12.5, "tags": ["x", "y"], "gift": False}
    return {
        "small (3 keys)": {"order_id": 7, "total": 12, "currency": "EUR"},
        "typical (~1 KB)": {
            "order_id": 7,
            "customer": {"id": 42, "tier": "gold", "name": "Zoë Müller"},
            "items": [dict(item, n=n) for n in range(10)],
        },
        "large (~100 KB)": {"rows": [dict(item, n=n) for n in range(1000)]},
    }


def per_call_us(fn: Any, arg: Any, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn(arg)
    return (time.perf_counter() - start) / count * 1e6


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


async def emit_us(payload: dict[str, Any], count: int) -> float:
    with fresh_dir() as folder:
        async with Runtime(folder / "journal.db") as rt:
            for _ in range(20):  # warm-up
                await rt.emit("order.created", payload)
            start = time.perf_counter()
            for _ in range(count):
                await rt.emit("order.created", payload)
            return (time.perf_counter() - start) / count * 1e6


def main(argv: list[str]) -> None:
    args = parse_args("The cost of the payload bounds per emit.", argv)
    emits, calls, rounds = (50, 200, 3) if args.quick else (300, 2000, 5)
    print(machine_line())
    print(f"{'payload':<18} {'emit µs':>9} {'dumps µs':>9} {'encode µs':>10} {'bounds share':>13}")
    for label, payload in payloads().items():
        emit = statistics.median(asyncio.run(emit_us(payload, emits)) for _ in range(rounds))
        plain = statistics.median(per_call_us(dumps, payload, calls) for _ in range(rounds))
        checked = statistics.median(
            per_call_us(encode_state, payload, calls) for _ in range(rounds)
        )
        share = max(0.0, checked - plain) / emit * 100
        print(f"{label:<18} {emit:>9,.0f} {plain:>9,.1f} {checked:>10,.1f} {share:>12.2f}%")


if __name__ == "__main__":
    main(sys.argv[1:])

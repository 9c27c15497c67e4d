"""The PostgreSQL writer against its raw ceiling and the server's WAL flush rate.

Prints figures; it is not a test. Run: ``python bench/bench_pg_writer.py [--quick]
[--url postgresql://...]``. Without ``--url`` it starts a throwaway cluster (the tests'
`tests/postgres.py`) with ``fsync`` and ``full_page_writes`` on (the tests run without
them), so every commit waits for its WAL flush as on a real server.

- **ours**: the ops our SQLite writer committed for one durable 3-step run (recorded from a
  real `Runtime`, as `bench_throughput.py` does), with fresh row and run ids per run, sent
  through `PostgresWriter` at ``synchronous="FULL"`` (``synchronous_commit=on``): R runs per
  batch, each batch enqueued in one `together` block and flushed (R = 1: ``await write``
  per run). Each batch also checks the epoch, renews the heartbeat and notifies.
- **raw**: the same statements through plain psycopg: one transaction per batch, pipelined,
  ``executemany`` per statement key in `Stmt` order (no fence, no heartbeat, no notify).
- **WAL flushes/s**: single-row autocommit INSERTs from one connection, each a commit that
  waits for its WAL flush: the limit to compare with (runs/s ≈ flushes/s x runs per commit).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from bench_throughput import as_written, one_run_ops, renamed
from common import fmt, fresh_dir, machine_line

from orchestrator.journal.ops import Op, grouped
from orchestrator.journal.postgres import schema
from orchestrator.journal.postgres.statements import SQL
from orchestrator.journal.postgres.writer import PostgresWriter

SIZES = (1, 100, 1_000)
FULL = {1: 1_000, 100: 10_000, 1_000: 20_000}
QUICK = {1: 200, 100: 2_000, 1_000: 4_000}
FLUSH_SECONDS = {True: 1.0, False: 3.0}


def runs_of(template: list[Op], row: int, run_id: str, first: int, count: int) -> list[list[Op]]:
    """`count` copies of one run's ops, rows numbered from `first`."""
    return [renamed(template, row, run_id, first + i, f"bench-{first + i}") for i in range(count)]


async def ours(url: str, runs: list[list[Op]], size: int) -> float:
    writer = PostgresWriter(url)
    await writer.open()
    task = asyncio.create_task(writer.run())
    try:
        began = time.perf_counter()
        if size == 1:
            for run in runs:
                await writer.write(run)
        else:
            for start in range(0, len(runs), size):
                with writer.together():
                    for run in runs[start : start + size]:
                        writer.enqueue(run)
                await writer.flush()
        return len(runs) / (time.perf_counter() - began)
    finally:
        await writer.close()
        await task


async def raw(url: str, runs: list[list[Op]], size: int) -> float:
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, options="-c search_path=orchestrator -c synchronous_commit=on"
    )
    written = [as_written(run) for run in runs]  # the checkpoints' `base`, as ours writes it
    try:
        began = time.perf_counter()
        for start in range(0, len(runs), size):
            ops = [op for run in written[start : start + size] for op in run]
            async with conn.transaction(), conn.pipeline():
                cursor = conn.cursor()
                for stmt, rows in grouped(ops):
                    await cursor.executemany(SQL[stmt], rows)
        return len(runs) / (time.perf_counter() - began)
    finally:
        await conn.close()


async def wal_flushes(url: str, seconds: float) -> float:
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, options="-c synchronous_commit=on"
    )
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.flush_probe (n BIGINT)")
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            await conn.execute("INSERT INTO public.flush_probe VALUES (%s)", (count,))
            count += 1
        return count / (time.perf_counter() - began)
    finally:
        await conn.close()


@contextmanager
def server(url: str | None) -> Iterator[Any]:
    """A function making a new database's URL: on `url`'s server, or a throwaway one."""
    if url is not None:
        names = iter(range(1_000_000))

        def on_url() -> str:
            name = f"bench_pg_writer_{time.time_ns()}_{next(names)}"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            return url.rsplit("/", 1)[0] + "/" + name

        yield on_url
        return
    # The tests' throwaway server, but flushing its WAL as a real one does (the tests' runs
    # without fsync).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import postgres

    postgres.SERVER_OPTIONS = ("-c fsync=on", "-c full_page_writes=on", "-c max_connections=50")
    cluster = postgres.start_cluster()
    try:
        yield lambda: cluster.create_database("bench")
    finally:
        cluster.stop()


async def measure(new_database: Any, quick: bool) -> None:
    with fresh_dir() as tmp:
        template, row, run_id = await one_run_ops(tmp / "record.db")
    counts = QUICK if quick else FULL
    url = new_database()
    await schema.migrate(url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("SHOW fsync")
        fsync = (await cursor.fetchone() or ("?",))[0]
        cursor = await conn.execute("SHOW server_version")
        version = (await cursor.fetchone() or ("?",))[0]
    print(machine_line())
    print(f"PostgreSQL {version}, fsync={fsync}, loopback TCP; {len(template)} ops per run")
    flushes = await wal_flushes(url, FLUSH_SECONDS[quick])
    print(f"WAL flushes/s (autocommit single-row INSERTs): {fmt(flushes)}")
    print(f"{'runs/batch':>10} {'runs':>7} {'ours runs/s':>12} {'raw runs/s':>11} {'ours/raw':>9}")
    first = 1
    for size in SIZES:
        runs = runs_of(template, row, run_id, first, counts[size])
        first += len(runs)
        ours_db, raw_db = new_database(), new_database()
        await schema.migrate(ours_db)
        await schema.migrate(raw_db)
        ours_rate = await ours(ours_db, runs, size)
        raw_rate = await raw(raw_db, runs, size)
        print(
            f"{size:>10} {len(runs):>7} {fmt(ours_rate):>12} {fmt(raw_rate):>11}"
            f" {ours_rate / raw_rate:>9.2f}"
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--url", help="a server to use (a new database is created per figure)")
    args = parser.parse_args(argv)
    with server(args.url) as new_database:
        asyncio.run(measure(new_database, args.quick))


if __name__ == "__main__":
    main(sys.argv[1:])

"""asyncpg through pgrouter with its defaults: every query is a named
prepared statement kept in asyncpg's statement cache.

Run by tests/drivers.rs with DATABASE_URL, WORKERS and ROUNDS set; each
worker is its own connection, and the router lends fewer server connections
than there are workers. Prints "ok <rows>" or fails with a reason.
"""

import asyncio
import datetime as dt
import os
import sys
import uuid
from decimal import Decimal

import asyncpg

URL = os.environ["DATABASE_URL"]
WORKERS = int(os.environ.get("WORKERS", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "30"))
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)

INSERT = "INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
SELECT = "SELECT id, worker, name, price, at, flag, blob, note, tags, ref FROM items WHERE id = $1"


async def worker(w):
    conn = await asyncpg.connect(URL)
    try:
        for i in range(ROUNDS):
            await one_round(conn, w, i)
        stmt = await conn.prepare(SELECT)
        if not stmt.get_name():
            raise AssertionError("asyncpg did not name its statement")
    finally:
        await conn.close()


async def one_round(conn, w, i):
    key = w * 10000 + i
    row = (key, w, f"naïve ✓ {w}-{i}", Decimal("12.34") + i, T0 + dt.timedelta(seconds=i),
           i % 2 == 0, bytes([0, 1, 2, 255, i % 256]), None, ["a", f"t{i}"],
           uuid.UUID(int=key))
    await conn.execute(INSERT, *row)
    got = await conn.fetchrow(SELECT, key)
    if tuple(got) != row:
        raise AssertionError(f"read back {tuple(got)!r}, wrote {row!r}")
    async with conn.transaction():
        await conn.execute("UPDATE items SET price = price + $1 WHERE id = $2", Decimal("1.00"), key)
        price = await conn.fetchval("SELECT price FROM items WHERE id = $1", key)
        if price != row[3] + 1:
            raise AssertionError(f"price {price} after update, expected {row[3] + 1}")
    try:
        async with conn.transaction():
            await conn.execute(INSERT, *row)
        raise AssertionError("duplicate insert succeeded")
    except asyncpg.UniqueViolationError:
        pass
    try:
        await conn.fetchval("SELECT 1 / $1::int", 0)
        raise AssertionError("division by zero succeeded")
    except asyncpg.DivisionByZeroError:
        pass
    # executemany: one statement, many Bind/Execute.
    await conn.executemany("UPDATE items SET note = $1 WHERE id = $2",
                           [(None, key), (f"note {i}", key)])
    n = await conn.fetchval("SELECT count(*) FROM items WHERE worker = $1 AND note IS NOT NULL", w)
    if n != i + 1:
        raise AssertionError(f"worker {w} sees {n} noted rows after round {i}")


async def main():
    conn = await asyncpg.connect(URL)
    await conn.execute("DROP TABLE IF EXISTS items")
    await conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, worker int, name text, price numeric(10,2),"
        " at timestamptz, flag bool, blob bytea, note text, tags text[], ref uuid)")
    results = await asyncio.gather(*(worker(w) for w in range(WORKERS)), return_exceptions=True)
    failures = [f"worker {w}: {type(r).__name__}: {r}" for w, r in enumerate(results) if r]
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    n, total = await conn.fetchrow("SELECT count(*), sum(price) FROM items")
    await conn.close()
    want_total = sum(Decimal("13.34") + i for i in range(ROUNDS)) * WORKERS
    if n != WORKERS * ROUNDS or total != want_total:
        print(f"table has {n} rows summing {total}, want {WORKERS * ROUNDS} / {want_total}",
              file=sys.stderr)
        sys.exit(1)
    print(f"ok {n}")


asyncio.run(main())

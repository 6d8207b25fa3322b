"""psycopg 3 through pgrouter, every statement prepared (prepare_threshold=0).

Run by tests/drivers.rs with DATABASE_URL, WORKERS and ROUNDS set. Each
worker thread has its own connection; the router lends fewer server
connections than there are workers, so prepared statements must follow each
client across server connections. Prints "ok <rows>" or fails with a reason.
"""

import datetime as dt
import os
import sys
import threading
from decimal import Decimal

import psycopg
from psycopg import errors

URL = os.environ["DATABASE_URL"]
WORKERS = int(os.environ.get("WORKERS", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "30"))
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
failures = []


def connect():
    return psycopg.connect(URL, prepare_threshold=0)


def worker(w):
    try:
        with connect() as conn:
            for i in range(ROUNDS):
                one_round(conn, w, i)
            # psycopg really prepared: its cache names server-side statements.
            if not conn._prepared._names:
                raise AssertionError("psycopg prepared nothing")
    except Exception as e:  # reported by the main thread
        failures.append(f"worker {w}: {type(e).__name__}: {e}")


def one_round(conn, w, i):
    key = w * 10000 + i
    row = (key, w, f"naïve ✓ {w}-{i}", Decimal("12.34") + i,
           T0 + dt.timedelta(seconds=i), i % 2 == 0, bytes([0, 1, 2, 255, i % 256]), None)
    with conn.transaction():
        conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row)
    got = conn.execute(
        "SELECT id, worker, name, price, at, flag, blob, note FROM items WHERE id = %s", (key,)
    ).fetchone()
    conn.commit()
    if got != row:
        raise AssertionError(f"read back {got!r}, wrote {row!r}")
    # A transaction of two statements.
    with conn.transaction():
        conn.execute("UPDATE items SET price = price + %s WHERE id = %s", (Decimal("1.00"), key))
        price = conn.execute("SELECT price FROM items WHERE id = %s", (key,)).fetchone()[0]
        if price != row[3] + 1:
            raise AssertionError(f"price {price} after update, expected {row[3] + 1}")
    # An error inside a transaction, then the same statements still work.
    try:
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row)
        raise AssertionError("duplicate insert succeeded")
    except errors.UniqueViolation:
        pass
    # An error from a prepared statement outside a transaction.
    conn.autocommit = True
    try:
        conn.execute("SELECT 1 / %s::int", (0,))
        raise AssertionError("division by zero succeeded")
    except errors.DivisionByZero:
        pass
    finally:
        conn.autocommit = False
    n = conn.execute("SELECT count(*) FROM items WHERE worker = %s", (w,)).fetchone()[0]
    conn.commit()
    if n != i + 1:
        raise AssertionError(f"worker {w} sees {n} rows after round {i}")


def main():
    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, worker int, name text, price numeric(10,2),"
            " at timestamptz, flag bool, blob bytea, note text)"
        )
        conn.commit()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    with connect() as conn:
        n, total = conn.execute("SELECT count(*), sum(price) FROM items").fetchone()
    want_total = sum(Decimal("13.34") + i for i in range(ROUNDS)) * WORKERS
    if n != WORKERS * ROUNDS or total != want_total:
        print(f"table has {n} rows summing {total}, want {WORKERS * ROUNDS} / {want_total}",
              file=sys.stderr)
        sys.exit(1)
    print(f"ok {n}")


if __name__ == "__main__":
    main()

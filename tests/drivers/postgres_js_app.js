// postgres.js through pgrouter with prepare on (its default): every tagged
// query becomes a named prepared statement on the connection it runs on.
// Run by tests/drivers.rs with DATABASE_URL, WORKERS and ROUNDS set; WORKERS
// concurrent tasks share one postgres.js pool of WORKERS connections, and the
// router lends fewer server connections. Prints "ok <rows>" or fails.
'use strict';
const postgres = require('postgres');

const { T0, check, expectError, runWorkers, report, run, WORKERS } = require('./common');

async function round(sql, w, i) {
  const id = w * 10000 + i;
  const at = new Date(T0 + i * 1000);
  const blob = Buffer.from([0, 1, 2, 255, i % 256]);
  const name = `naïve ✓ ${w}-${i}`;
  const price = (12.34 + i).toFixed(2);
  const flag = i % 2 === 0;
  const tags = ['a', `t${i}`];
  await sql`INSERT INTO items VALUES (${id}, ${w}, ${name}, ${price}, ${at}, ${flag}, ${blob}, ${null}, ${sql.array(tags)})`;
  const [got] = await sql`SELECT id, worker, name, price, at, flag, blob, note, tags FROM items WHERE id = ${id}`;
  check(got.id === id && got.worker === w && got.name === name, `identity ${JSON.stringify(got)}`);
  check(got.price === price, `price ${got.price} != ${price}`);
  check(got.at.getTime() === at.getTime(), `at ${got.at.toISOString()}`);
  check(got.flag === flag && got.note === null, `flag/note ${got.flag} ${got.note}`);
  check(Buffer.compare(got.blob, blob) === 0, `blob ${got.blob.toString('hex')}`);
  check(JSON.stringify(got.tags) === JSON.stringify(tags), `tags ${JSON.stringify(got.tags)}`);

  await sql.begin(async (tx) => {
    await tx`UPDATE items SET price = price + ${'1.00'} WHERE id = ${id}`;
    const [{ price: p }] = await tx`SELECT price FROM items WHERE id = ${id}`;
    check(p === (13.34 + i).toFixed(2), `price ${p} after update`);
  });
  await expectError(
    sql.begin(async (tx) => {
      await tx`INSERT INTO items (id, worker) VALUES (${id}, ${w})`;
    }),
    '23505',
  );
  await expectError(sql`SELECT 1 / ${0}::int AS q`, '22012');
  const [{ n }] = await sql`SELECT count(*)::int AS n FROM items WHERE worker = ${w}`;
  check(n === i + 1, `worker ${w} sees ${n} rows after round ${i}`);
}

async function main() {
  const sql = postgres(process.env.DATABASE_URL, { max: WORKERS, prepare: true, onnotice: () => {} });
  await sql`DROP TABLE IF EXISTS items`;
  await sql`CREATE TABLE items (id int PRIMARY KEY, worker int, name text, price numeric(10,2),
            at timestamptz, flag bool, blob bytea, note text, tags text[])`;
  await runWorkers((w, i) => round(sql, w, i));
  const [{ n, total }] = await sql`SELECT count(*)::int AS n, sum(price)::text AS total FROM items`;
  await sql.end();
  report(n, total);
}

run(main);

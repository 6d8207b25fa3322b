// node-postgres (pg) through pgrouter with named queries ({ name, text, values }),
// which pg prepares once per connection and then only binds and executes.
// Run by tests/drivers.rs with DATABASE_URL, WORKERS and ROUNDS set; each
// worker is its own Client and the router lends fewer server connections.
// Prints "ok <rows>" or exits non-zero with a reason.
'use strict';
const { Client } = require('pg');

const URL = process.env.DATABASE_URL;
const WORKERS = Number(process.env.WORKERS || 8);
const ROUNDS = Number(process.env.ROUNDS || 30);
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);

const insert = (values) => ({
  name: 'insert-item',
  text: 'INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
  values,
});
const select = (id) => ({
  name: 'select-item',
  text: 'SELECT id, worker, name, price, at, flag, blob, note, doc FROM items WHERE id = $1',
  values: [id],
});

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function expectError(client, query, code) {
  try {
    await client.query(query);
  } catch (e) {
    check(e.code === code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`);
    return;
  }
  throw new Error(`expected SQLSTATE ${code}, the query succeeded`);
}

async function round(c, w, i) {
  const id = w * 10000 + i;
  const at = new Date(T0 + i * 1000);
  const blob = Buffer.from([0, 1, 2, 255, i % 256]);
  const doc = { worker: w, round: i, tags: ['x', 'y'] };
  const row = [id, w, `naïve ✓ ${w}-${i}`, (12.34 + i).toFixed(2), at, i % 2 === 0, blob, null, doc];
  await c.query(insert(row));
  const got = (await c.query(select(id))).rows[0];
  check(got.id === id && got.worker === w && got.name === row[2], `identity ${JSON.stringify(got)}`);
  check(got.price === row[3], `price ${got.price} != ${row[3]}`);
  check(got.at.getTime() === at.getTime(), `at ${got.at.toISOString()} != ${at.toISOString()}`);
  check(got.flag === row[5] && got.note === null, `flag/note ${got.flag} ${got.note}`);
  check(Buffer.compare(got.blob, blob) === 0, `blob ${got.blob.toString('hex')}`);
  // jsonb keeps its own key order: compare field by field.
  check(
    got.doc.worker === w && got.doc.round === i && got.doc.tags.join() === 'x,y',
    `doc ${JSON.stringify(got.doc)}`,
  );

  await c.query('BEGIN');
  await c.query({ name: 'bump', text: 'UPDATE items SET price = price + $1 WHERE id = $2', values: ['1.00', id] });
  const price = (await c.query({ name: 'price', text: 'SELECT price FROM items WHERE id = $1', values: [id] })).rows[0].price;
  check(price === (13.34 + i).toFixed(2), `price ${price} after update`);
  await c.query('COMMIT');

  await c.query('BEGIN');
  await expectError(c, insert(row), '23505');
  await expectError(c, select(id), '25P02');
  await c.query('ROLLBACK');

  await expectError(c, { name: 'div', text: 'SELECT 1 / $1::int AS q', values: [0] }, '22012');
  const n = (await c.query({ name: 'count', text: 'SELECT count(*)::int AS n FROM items WHERE worker = $1', values: [w] })).rows[0].n;
  check(n === i + 1, `worker ${w} sees ${n} rows after round ${i}`);
}

async function worker(w) {
  const c = new Client({ connectionString: URL });
  await c.connect();
  try {
    for (let i = 0; i < ROUNDS; i++) await round(c, w, i);
  } finally {
    await c.end();
  }
}

async function main() {
  const c = new Client({ connectionString: URL });
  await c.connect();
  await c.query('DROP TABLE IF EXISTS items');
  await c.query(`CREATE TABLE items (id int PRIMARY KEY, worker int, name text, price numeric(10,2),
                 at timestamptz, flag bool, blob bytea, note text, doc jsonb)`);
  const results = await Promise.allSettled([...Array(WORKERS).keys()].map(worker));
  const failures = results
    .map((r, w) => (r.status === 'rejected' ? `worker ${w}: ${r.reason && r.reason.stack}` : null))
    .filter(Boolean);
  if (failures.length) {
    console.error(failures.join('\n'));
    process.exit(1);
  }
  const { n, total } = (await c.query('SELECT count(*)::int AS n, sum(price)::text AS total FROM items')).rows[0];
  await c.end();
  let want = 0;
  for (let i = 0; i < ROUNDS; i++) want += 1334 + 100 * i;
  const wantTotal = ((want * WORKERS) / 100).toFixed(2);
  if (n !== WORKERS * ROUNDS || total !== wantTotal) {
    console.error(`table has ${n} rows summing ${total}, want ${WORKERS * ROUNDS} / ${wantTotal}`);
    process.exit(1);
  }
  console.log(`ok ${n}`);
}

main().catch((e) => {
  console.error(e.stack);
  process.exit(1);
});

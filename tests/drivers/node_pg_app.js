// node-postgres (pg) through pgrouter with named queries ({ name, text, values }),
// which pg prepares once per connection and then only binds and executes.
// Run by tests/drivers.rs with DATABASE_URL, WORKERS and ROUNDS set; each
// worker is its own Client and the router lends fewer server connections.
// Prints "ok <rows>" or exits non-zero with a reason.
'use strict';
const { Client } = require('pg');
const { T0, check, expectError, runWorkers, report, run } = require('./common');

const URL = process.env.DATABASE_URL;

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
  await expectError(c.query(insert(row)), '23505');
  await expectError(c.query(select(id)), '25P02');
  await c.query('ROLLBACK');

  await expectError(c.query({ name: 'div', text: 'SELECT 1 / $1::int AS q', values: [0] }), '22012');
  const n = (await c.query({ name: 'count', text: 'SELECT count(*)::int AS n FROM items WHERE worker = $1', values: [w] })).rows[0].n;
  check(n === i + 1, `worker ${w} sees ${n} rows after round ${i}`);
}

async function main() {
  const c = new Client({ connectionString: URL });
  await c.connect();
  await c.query('DROP TABLE IF EXISTS items');
  await c.query(`CREATE TABLE items (id int PRIMARY KEY, worker int, name text, price numeric(10,2),
                 at timestamptz, flag bool, blob bytea, note text, doc jsonb)`);
  // One Client per worker, opened lazily and closed at the end.
  const clients = [];
  await runWorkers(async (w, i) => {
    if (!clients[w]) {
      clients[w] = new Client({ connectionString: URL });
      await clients[w].connect();
    }
    await round(clients[w], w, i);
  });
  await Promise.all(clients.map((cl) => cl.end()));
  const { n, total } = (await c.query('SELECT count(*)::int AS n, sum(price)::text AS total FROM items')).rows[0];
  await c.end();
  report(n, total);
}

run(main);

// What the Node.js driver programs share: settings from the environment,
// checks, and the final report tests/drivers.rs reads ("ok <rows>").
'use strict';

const WORKERS = Number(process.env.WORKERS || 8);
const ROUNDS = Number(process.env.ROUNDS || 30);
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);

function check(cond, what) {
  if (!cond) throw new Error(what);
}

/// Awaits `promise` and requires it to fail with SQLSTATE `code`.
async function expectError(promise, code) {
  try {
    await promise;
  } catch (e) {
    check(e.code === code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`);
    return;
  }
  throw new Error(`expected SQLSTATE ${code}, the query succeeded`);
}

/// Runs `round(w, i)` ROUNDS times for each of WORKERS concurrent workers;
/// exits non-zero listing the workers that failed.
async function runWorkers(round) {
  const results = await Promise.allSettled(
    [...Array(WORKERS).keys()].map(async (w) => {
      for (let i = 0; i < ROUNDS; i++) await round(w, i);
    }),
  );
  const failures = results
    .map((r, w) => (r.status === 'rejected' ? `worker ${w}: ${r.reason && r.reason.stack}` : null))
    .filter(Boolean);
  if (failures.length) {
    console.error(failures.join('\n'));
    process.exit(1);
  }
}

/// Checks the table's row count and price sum (each row: 12.34 + round,
/// plus 1.00 from the update) and prints "ok <rows>".
function report(n, total) {
  let want = 0;
  for (let i = 0; i < ROUNDS; i++) want += 1334 + 100 * i;
  const wantTotal = ((want * WORKERS) / 100).toFixed(2);
  if (n !== WORKERS * ROUNDS || total !== wantTotal) {
    console.error(`table has ${n} rows summing ${total}, want ${WORKERS * ROUNDS} / ${wantTotal}`);
    process.exit(1);
  }
  console.log(`ok ${n}`);
}

function run(main) {
  main().catch((e) => {
    console.error(e.stack);
    process.exit(1);
  });
}

module.exports = { WORKERS, ROUNDS, T0, check, expectError, runWorkers, report, run };

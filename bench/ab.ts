/**
 * Before and after, in one run: the publish path of this checkout against another commit's, as
 * `npm run bench` measures it (POST /v1/events, 1 KiB payload, 32 connections, `serve` with roles
 * api,relay in a child process), alternated round by round so both see the same machine. Prints
 * events/s and CPU µs per event by process for each round, and the medians. The machine's noise
 * moves throughput 2–5× between runs; the alternation and the CPU figures are what make a change
 * of a few per cent visible.
 *
 *   npx tsx bench/ab.ts <git ref>      e.g. HEAD~1, main, a commit id
 * Knobs: BENCH_SECONDS (6 per window), BENCH_ROUNDS (4).
 * The ref is checked out in a temporary git worktree (node_modules linked from this checkout),
 * removed at the end.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startAmeboChild, type AmeboChild } from './amebo-child.js';
import { background, closeAdmin, meter, PG_ADMIN_URL, PROBE_APP } from './cpu.js';
import { APP_AUTH, orderPayload, setupOrders } from './payload.js';
import { load } from './publish.js';

const ref = process.argv[2];
if (!ref || ref.startsWith('-')) {
  // A ref starting with '-' would reach git as an option.
  process.stderr.write('usage: npx tsx bench/ab.ts <git ref>\n');
  process.exit(2);
}
const SECONDS = Number(process.env.BENCH_SECONDS ?? 6);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
const CONNECTIONS = 32;
const root = path.resolve(new URL('..', import.meta.url).pathname);
const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8' }).trim();

let commit: string;
try {
  commit = git('rev-parse', '--short', '--verify', '--quiet', `${ref}^{commit}`);
} catch {
  process.stderr.write(`bench/ab.ts: ${ref} is not a commit here\n`);
  process.exit(2);
}
const tree = path.join(mkdtempSync(path.join(tmpdir(), 'amebo-ab-')), 'base');
git('worktree', 'add', '--detach', tree, commit);
if (!existsSync(path.join(tree, 'node_modules')))
  symlinkSync(path.join(root, 'node_modules'), path.join(tree, 'node_modules'));

interface Side {
  name: string;
  amebo: AmeboChild;
  probe: pg.Client;
  rows: { rate: number; node: number; pg: number; rmq: number }[];
}

async function side(name: string, bin: string): Promise<Side> {
  const amebo = await startAmeboChild({ roles: 'api,relay', env: { AMEBO_DB_POOL: '8' }, bin });
  await setupOrders(amebo.call);
  const probe = new pg.Client({
    connectionString: `${PG_ADMIN_URL.replace(/\/[^/]*$/, '')}/${amebo.db}`,
    application_name: PROBE_APP,
  });
  await probe.connect();
  return { name, amebo, probe, rows: [] };
}

async function outboxEmpty(s: Side): Promise<void> {
  const end = Date.now() + 30_000;
  while ((await s.probe.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox')).rows[0]!.n > 0) {
    if (Date.now() > end) throw new Error(`${s.name}: outbox not empty 30 s after the load`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const body = JSON.stringify({ action: 'order.placed', payload: orderPayload() });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sides: Side[] = [];
try {
  sides.push(await side(`this checkout`, path.join(root, 'bin/amebo.js')));
  sides.push(await side(commit, path.join(tree, 'bin/amebo.js')));
  for (const s of sides) {
    await load(`${s.amebo.url}/v1/events`, body, { authorization: APP_AUTH }, { connections: CONNECTIONS, seconds: 2 });
    await outboxEmpty(s);
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const s of round % 2 ? [...sides].reverse() : sides) {
      const bg = await background(1500);
      const m = await meter({ node: [s.amebo.pid], db: s.amebo.db, background: bg });
      const t0 = performance.now();
      const r = await load(
        `${s.amebo.url}/v1/events`,
        body,
        { authorization: APP_AUTH },
        { connections: CONNECTIONS, seconds: SECONDS },
      );
      const wall = performance.now() - t0;
      await outboxEmpty(s);
      const c = await m.stop();
      if (r.non2xx) throw new Error(`${s.name}: ${r.non2xx} non-2xx answers`);
      const n = Math.max(1, r['2xx']);
      const row = { rate: r['2xx'] / (wall / 1000), node: c.node / n, pg: c.pg / n, rmq: c.rmq / n };
      s.rows.push(row);
      process.stdout.write(
        `round ${round + 1}  ${s.name.padEnd(14)} ${row.rate.toFixed(0).padStart(6)} ev/s  node ${row.node.toFixed(0).padStart(4)}  ` +
          `pg ${row.pg.toFixed(0).padStart(3)}  rmq ${row.rmq.toFixed(0).padStart(4)}  total ${(row.node + row.pg + row.rmq).toFixed(0)} µs/event\n`,
      );
    }
  }
  process.stdout.write('\nmedians over the rounds:\n');
  for (const s of sides) {
    const k = (f: (r: Side['rows'][number]) => number) => median(s.rows.map(f)).toFixed(0);
    process.stdout.write(
      `  ${s.name.padEnd(14)} ${k((r) => r.rate).padStart(6)} ev/s  node ${k((r) => r.node)}  pg ${k((r) => r.pg)}  ` +
        `rmq ${k((r) => r.rmq)}  total ${k((r) => r.node + r.pg + r.rmq)} µs/event\n`,
    );
  }
} finally {
  for (const s of sides) {
    await s.probe.end().catch(() => undefined);
    await s.amebo.destroy().catch(() => undefined);
  }
  await closeAdmin();
  rmSync(path.join(tree, 'node_modules'), { force: true }); // the link, before git removes the tree
  git('worktree', 'remove', '--force', tree);
  rmSync(path.dirname(tree), { recursive: true, force: true });
}

/**
 * `npm run bench:profile`: a CPU profile of the publish path under load. Starts
 * `node --cpu-prof --cpu-prof-dir <tmp> bin/amebo.js serve` (roles api,relay), registers the
 * publish benchmark's action, warms up, loads POST /v1/events with 32 connections for
 * BENCH_PROFILE_SECONDS (10), waits until every accepted event is confirmed, stops Amebo with
 * SIGTERM (V8 writes the profile on the graceful exit) and prints the top 15 self-time frames of the
 * main thread within the load window, as text and as the markdown table kept in bench/README.md.
 * BENCH_PROFILE_KEEP=1 keeps the .cpuprofile (its path is printed; open it in Chrome DevTools).
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startAmeboChild } from './amebo-child.js';
import { closeAdmin, meter, PG_ADMIN_URL, PROBE_APP, background, procUserSysUs } from './cpu.js';
import { APP_AUTH, orderPayload, setupOrders } from './payload.js';
import { render, summarise } from './profile-summary.js';
import { load } from './publish.js';

const SECONDS = Number(process.env.BENCH_PROFILE_SECONDS ?? 10);
const dir = mkdtempSync(path.join(tmpdir(), 'amebo-cpuprof-'));
const monoUs = (): number => Number(process.hrtime.bigint() / 1000n);

const amebo = await startAmeboChild({
  roles: 'api,relay',
  env: { AMEBO_DB_POOL: '8', AMEBO_WORKERS: '1' },
  nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir],
});
let keep = false;
try {
  await setupOrders(amebo.call);
  const probe = new pg.Client({
    connectionString: `${PG_ADMIN_URL.replace(/\/[^/]*$/, '')}/${amebo.db}`,
    application_name: PROBE_APP,
  });
  await probe.connect();
  const body = JSON.stringify({ action: 'order.placed', payload: orderPayload() });
  const url = `${amebo.url}/v1/events`;
  const auth = { authorization: APP_AUTH };
  await load(url, body, auth, { connections: 32, seconds: 2 }); // warm-up (JIT)
  const bg = await background(1500);
  const m = await meter({ node: [amebo.pid], db: amebo.db, background: bg });
  const from = monoUs();
  const us0 = procUserSysUs(amebo.pid);
  const r = await load(url, body, auth, {
    connections: 32,
    seconds: SECONDS,
    ...(process.env.BENCH_PROFILE_RATE ? { rate: Number(process.env.BENCH_PROFILE_RATE) } : {}),
  });
  for (let i = 0; i < 300; i++) {
    const n = (await probe.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox')).rows[0]!.n;
    if (!n) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  const to = monoUs();
  const c = await m.stop();
  const us1 = procUserSysUs(amebo.pid);
  await probe.end();
  const code = await amebo.stop();
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  if (!files.length) throw new Error(`no .cpuprofile written in ${dir} (amebo exited ${code})`);
  // One profile per thread (and per process with --workers); the main thread's is the largest.
  const main = files.map((f) => path.join(dir, f)).sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
  const n = r['2xx'];
  const s = summarise(main, 15, { from, to });
  process.stdout.write(
    `\nCPU profile of the publish path: ${n} events in ${SECONDS} s (${Math.round(n / SECONDS)}/s, 32 connections), ` +
      `amebo exited ${code} on SIGTERM; profile ${path.basename(main)} (${files.length} file(s))\n` +
      `CPU µs/event over the load window: node ${(c.node / n).toFixed(0)}, pg ${(c.pg / n).toFixed(0)}, rmq ${(c.rmq / n).toFixed(0)}, ` +
      `total ${((c.node + c.pg + c.rmq) / n).toFixed(0)} (profiling slows node)\n` +
      (us0 && us1
        ? `node's own split: user ${((us1.user - us0.user) / n).toFixed(0)}, system ${((us1.sys - us0.sys) / n).toFixed(0)} µs/event. ` +
          'The profiler samples the main thread on the wall clock: a native frame such as writev can also hold time the\n' +
          'thread was preempted after waking its peer on loopback (off CPU); compare it with the system time.\n'
        : '') +
      '\n' +
      render(s) +
      '\n' +
      render(s, true),
  );
  if (process.env.BENCH_PROFILE_KEEP) {
    keep = true;
    process.stdout.write(`\nprofile kept: ${main}\n`);
  }
} finally {
  await amebo.destroy();
  await closeAdmin();
  if (!keep) rmSync(dir, { recursive: true, force: true });
}
process.exit(0);

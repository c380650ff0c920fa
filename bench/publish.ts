/**
 * Publish path benchmark: POST /v1/events (1 KiB payload, real schema, 32 connections) → committed
 * → confirmed, against `node bin/amebo.js serve` (roles api,relay) in a child process, next to
 * baselines measured in the same run: a bare fastify JSON POST that parses and validates the same
 * body (its own child process), and raw amqplib publishes of the same body with publisher confirms
 * to a quorum queue (from this process). Then latency and CPU at a fixed 1,000 events/s.
 *
 * CPU per event by process (see cpu.ts): Amebo's node process(es), the PostgreSQL backends of its
 * database, the RabbitMQ node net of its background; the load generator (this process) apart.
 * Amebo's window runs from the start of the load until every accepted event is confirmed and
 * marked (its outbox is empty), so the confirm and mark bookkeeping is in the figure.
 * Knobs: BENCH_SECONDS (8), BENCH_WORKERS (1).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import amqp from 'amqplib';
import autocannon from 'autocannon';
import pg from 'pg';
import { AMQP_URL } from '../test/helpers/harness.js';
import { startAmeboChild } from './amebo-child.js';
import { closeAdmin, meter, PG_ADMIN_URL, PROBE_APP, background, type CpuRow, type CpuUse } from './cpu.js';
import { APP_AUTH, orderPayload, setupOrders } from './payload.js';
import { insertEvents, markPublished, type NewEvent } from '../src/store/events.js';
import type { Section } from './run.js';

const DURATION = Number(process.env.BENCH_SECONDS ?? 8);
const RATE = 1000;
const CONNECTIONS = 32;

export function spawnBare(): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', new URL('./servers.ts', import.meta.url).pathname], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('bare server did not start')), 30_000);
    child.stdout.on('data', (d: Buffer) => {
      const m = /READY (\d+)/.exec(d.toString());
      if (m) {
        clearTimeout(t);
        resolve({ port: Number(m[1]), child });
      }
    });
    child.on('exit', (code) => reject(new Error(`bare server exited ${code}`)));
  });
}

export function load(
  url: string,
  body: string,
  headers: Record<string, string>,
  opts: { connections: number; rate?: number; seconds: number },
): Promise<autocannon.Result> {
  return new Promise<autocannon.Result>((resolve, reject) => {
    autocannon(
      {
        url,
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json', ...headers },
        connections: opts.connections,
        duration: opts.seconds,
        ...(opts.rate ? { overallRate: opts.rate } : {}),
      },
      (err, res) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(res)),
    );
  });
}

/** Waits until `sql` (a count) returns 0, at most `ms`; returns the last count. */
async function untilZero(c: pg.Client, sql: string, ms: number): Promise<number> {
  const end = Date.now() + ms;
  for (;;) {
    const n = (await c.query<{ n: number }>(sql)).rows[0]!.n;
    if (n === 0 || Date.now() > end) return n;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Raw amqplib: the same body published with confirms (at most `window` unconfirmed) for `seconds`. */
async function rawPublish(queue: string, body: Buffer, seconds: number, window = 2048): Promise<number> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    let inflight = 0;
    let confirmed = 0;
    let wake: (() => void) | undefined;
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end) {
      if (inflight >= window) {
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      inflight++;
      const ok = ch.publish('', queue, body, { persistent: true, contentType: 'application/json' }, (err) => {
        inflight--;
        if (!err) confirmed++;
        const w = wake;
        wake = undefined;
        w?.();
      });
      if (!ok) await new Promise((r) => ch.once('drain', r));
    }
    await ch.waitForConfirms();
    await ch.deleteQueue(queue);
    return confirmed;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/**
 * Raw pg: what the store costs PostgreSQL with nothing of Amebo around it. The same statements the
 * publish path runs (a group commit of events + outbox rows as one multi-row INSERT, then one asynchronous
 * DELETE of their outbox rows, as after the broker confirm), on copies of its tables with the same
 * indexes, in batches of `batch` events, `flushes` commits in flight, for `seconds`.
 */
async function rawStore(
  db: string,
  body: string,
  batch: number,
  seconds: number,
  flushes = 4,
): Promise<{ events: number; wallMs: number; cpu: CpuUse }> {
  // The store's own functions, on copies of its tables in a schema of their own (search_path).
  const pool = new pg.Pool({
    connectionString: `${PG_ADMIN_URL.replace(/\/[^/]*$/, '')}/${db}`,
    max: flushes,
    options: '-c search_path=raw_store',
  });
  try {
    await pool.query(
      `CREATE SCHEMA raw_store; CREATE TABLE raw_store.events (LIKE public.events INCLUDING ALL);
       CREATE TABLE raw_store.outbox (LIKE public.outbox INCLUDING ALL)`,
    );
    const payload = JSON.stringify((JSON.parse(body) as { payload: unknown }).payload);
    const owner = '00000000-0000-4000-8000-000000000000';
    let seq = 0;
    let done = 0;
    let end = 0;
    const worker = async (): Promise<void> => {
      while (performance.now() < end) {
        const now = new Date();
        const evs: NewEvent[] = [];
        for (let i = 0; i < batch; i++) {
          const id = `00000000-0000-4000-8000-${(seq++).toString(16).padStart(12, '0')}`;
          evs.push({
            id,
            action: 'order.placed',
            application: 'bench',
            schemaVersion: 1,
            payloadJson: payload,
            deduper: null,
            conversationId: id,
            deliverAt: null,
            createdAt: now,
          });
        }
        await insertEvents(pool, evs, owner);
        await markPublished(
          pool,
          evs.map((e) => e.id),
        );
        done += batch;
      }
    };
    // Every connection open before the meter starts, and the meter stopped before they close:
    // the backends are counted only while they live.
    await Promise.all(Array.from({ length: flushes }, () => pool.query('SELECT 1')));
    const m = await meter({ node: [], self: true, db });
    const t0 = performance.now();
    end = t0 + seconds * 1000;
    await Promise.all(Array.from({ length: flushes }, worker));
    const wallMs = performance.now() - t0;
    return { events: done, wallMs, cpu: await m.stop() };
  } finally {
    await pool.query('DROP SCHEMA IF EXISTS raw_store CASCADE').catch(() => undefined);
    await pool.end();
  }
}

/** Amebo's group-commit size histogram so far (sum and count), from its /metrics. */
async function commitSizes(url: string): Promise<{ sum: number; count: number }> {
  const t = await (await fetch(`${url}/metrics`)).text();
  const v = (k: string) => Number(new RegExp(`^amebo_group_commit_size_${k} ([\\d.e+]+)`, 'm').exec(t)?.[1] ?? 0);
  return { sum: v('sum'), count: v('count') };
}

export async function run(): Promise<Section> {
  const bare = await spawnBare();
  const amebo = await startAmeboChild({ roles: 'api,relay', env: { AMEBO_DB_POOL: '8' } });
  const notes: string[] = [];
  const cpu: CpuRow[] = [];
  const probe = new pg.Client({
    connectionString: `${PG_ADMIN_URL.replace(/\/[^/]*$/, '')}/${amebo.db}`,
    application_name: PROBE_APP,
  });
  try {
    await setupOrders(amebo.call);
    await probe.connect();
    const body = JSON.stringify({ action: 'order.placed', payload: orderPayload() });
    const bareUrl = `http://127.0.0.1:${bare.port}/ingest`;
    const ameboUrl = `${amebo.url}/v1/events`;
    const auth = { authorization: APP_AUTH };
    notes.push(
      `event body ${Buffer.byteLength(body)} bytes, ${CONNECTIONS} connections, ${DURATION} s per run; Amebo is \`node bin/amebo.js serve\` (roles api,relay, AMEBO_WORKERS=${amebo.env.AMEBO_WORKERS}) and the bare server each in their own process, load from this one`,
    );
    await load(bareUrl, body, {}, { connections: CONNECTIONS, seconds: 2 }); // warm-up
    await load(ameboUrl, body, auth, { connections: CONNECTIONS, seconds: 2 });
    await untilZero(probe, 'SELECT count(*)::int AS n FROM outbox', 15_000);

    // Saturated: as many events as 32 connections get through in DURATION s.
    let m = await meter({ node: [bare.child.pid!] });
    let t0 = performance.now();
    const b = await load(bareUrl, body, {}, { connections: CONNECTIONS, seconds: DURATION });
    const bWall = performance.now() - t0;
    const bCpu = await m.stop();

    let bg = await background(1500);
    const sizes0 = await commitSizes(amebo.url);
    m = await meter({ node: [amebo.pid], db: amebo.db, background: bg });
    t0 = performance.now();
    const a = await load(ameboUrl, body, auth, { connections: CONNECTIONS, seconds: DURATION });
    const aWall = performance.now() - t0;
    const left = await untilZero(probe, 'SELECT count(*)::int AS n FROM outbox', 30_000);
    const aCpu = await m.stop();
    if (a.non2xx) notes.push(`WARNING: ${a.non2xx} non-2xx answers from Amebo`);
    if (left) notes.push(`WARNING: ${left} events still unconfirmed 30 s after the load`);
    const bRate = b['2xx'] / (bWall / 1000);
    cpu.push(
      {
        stage: `publish: POST /v1/events → confirmed, ${CONNECTIONS} conns`,
        events: a['2xx'],
        wallMs: aWall,
        ratio: a['2xx'] / (aWall / 1000) / bRate,
        cpu: aCpu,
      },
      { stage: 'bare fastify POST + schema validation', events: b['2xx'], wallMs: bWall, baseline: true, cpu: bCpu },
    );

    // Raw pg: the store's statements alone, in batches of the size Amebo's group commit reached.
    const sizes = await commitSizes(amebo.url);
    const batch = Math.max(1, Math.round((sizes.sum - sizes0.sum) / Math.max(1, sizes.count - sizes0.count)));
    const stored = await rawStore(amebo.db, body, batch, DURATION);
    cpu.push({ stage: `raw pg group commit + mark (batches of ${batch})`, baseline: true, ...stored });

    // Raw amqplib publish with confirms, same body, to a quorum queue: as fast as it goes (≤ 2,048
    // unconfirmed), then with no more in flight than the HTTP load has requests (32). RabbitMQ's
    // cost per message depends on how many arrive together, so the second is the floor for a
    // publish per request.
    for (const window of [2048, CONNECTIONS]) {
      bg = await background(1500);
      m = await meter({ node: [], self: true, background: bg });
      t0 = performance.now();
      const raw = await rawPublish(`${amebo.prefix}.rawpub`, Buffer.from(body), DURATION, window);
      cpu.push({
        stage: `raw amqplib publish + confirms (quorum, ≤${window})`,
        events: raw,
        wallMs: performance.now() - t0,
        baseline: true,
        cpu: await m.stop(),
      });
    }

    // The floor: the same work done bare, each part by itself (HTTP + validation, store, broker
    // with as many publishes in flight as requests).
    const per = (r: CpuRow, k: 'node' | 'pg' | 'rmq') => r.cpu[k] / Math.max(1, r.events);
    const [bareRow, pgRow, mqRow] = [cpu[1]!, cpu[2]!, cpu[4]!];
    const floor = {
      node: per(bareRow, 'node') + per(pgRow, 'node') + per(mqRow, 'node'),
      pg: per(pgRow, 'pg'),
      rmq: per(mqRow, 'rmq'),
    };
    notes.push(
      `floor (bare fastify + raw pg + raw amqplib ≤${CONNECTIONS} in flight, CPU µs per event): node ${floor.node.toFixed(0)}, pg ${floor.pg.toFixed(0)}, ` +
        `rmq ${floor.rmq.toFixed(0)}, total ${(floor.node + floor.pg + floor.rmq).toFixed(0)}; Amebo ` +
        `${((cpu[0]!.cpu.node + cpu[0]!.cpu.pg + cpu[0]!.cpu.rmq) / Math.max(1, cpu[0]!.events)).toFixed(0)}`,
    );

    // Fixed rate: 1,000 events/s.
    bg = await background(1500);
    m = await meter({ node: [amebo.pid], db: amebo.db, background: bg });
    t0 = performance.now();
    const fixed = await load(ameboUrl, body, auth, { connections: CONNECTIONS, rate: RATE, seconds: DURATION });
    const fWall = performance.now() - t0;
    await untilZero(probe, 'SELECT count(*)::int AS n FROM outbox', 30_000);
    const fCpu = await m.stop();
    m = await meter({ node: [bare.child.pid!] });
    t0 = performance.now();
    const fixedBare = await load(bareUrl, body, {}, { connections: CONNECTIONS, rate: RATE, seconds: DURATION });
    const fbWall = performance.now() - t0;
    const fbCpu = await m.stop();
    cpu.push(
      {
        stage: `publish: POST /v1/events → confirmed, ${RATE} ev/s`,
        events: fixed['2xx'],
        wallMs: fWall,
        ratio: fixed['2xx'] / (fWall / 1000) / (fixedBare['2xx'] / (fbWall / 1000)),
        cpu: fCpu,
      },
      {
        stage: `bare fastify POST + validation, ${RATE} ev/s`,
        events: fixedBare['2xx'],
        wallMs: fbWall,
        baseline: true,
        cpu: fbCpu,
      },
    );

    const total = (await probe.query<{ n: number }>('SELECT count(*)::int AS n FROM events')).rows[0]!.n;
    notes.push(
      `${total} events stored; Amebo's CPU window closes when its outbox is empty (every accepted event confirmed and marked)`,
    );
    return {
      capacity: a['2xx'] / (aWall / 1000),
      title: 'Publish path: POST /v1/events vs bare fastify JSON POST (same body, validated)',
      rows: [
        {
          metric: `throughput, ${CONNECTIONS} connections`,
          amebo: a.requests.average,
          baseline: b.requests.average,
          unit: 'req/s',
          higherIsBetter: true,
        },
        {
          metric: `p50 latency, ${CONNECTIONS} connections`,
          amebo: a.latency.p50,
          baseline: b.latency.p50,
          unit: 'ms',
        },
        {
          metric: `p99 latency, ${CONNECTIONS} connections`,
          amebo: a.latency.p99,
          baseline: b.latency.p99,
          unit: 'ms',
        },
        {
          metric: `p50 latency at ${RATE.toLocaleString('en-US')} events/s`,
          amebo: fixed.latency.p50,
          baseline: fixedBare.latency.p50,
          unit: 'ms',
        },
        {
          metric: `p99 latency at ${RATE.toLocaleString('en-US')} events/s`,
          amebo: fixed.latency.p99,
          baseline: fixedBare.latency.p99,
          unit: 'ms',
        },
      ],
      notes,
      cpu,
    };
  } finally {
    await probe.end().catch(() => undefined);
    bare.child.kill('SIGTERM');
    await amebo.destroy();
    await closeAdmin();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { print } = await import('./run.js');
  print([await run()]);
  process.exit(0);
}

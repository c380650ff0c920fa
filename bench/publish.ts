/**
 * Publish path benchmark: POST /v1/events (1 KiB payload, real schema, 32 connections) against a
 * bare fastify JSON POST endpoint measured in the same run, then latency at a fixed 1,000 events/s.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import pg from 'pg';
import { request } from 'undici';
import { dropBrokerObjects } from '../test/helpers/harness.js';
import type { Section } from './run.js';

const DURATION = Number(process.env.BENCH_SECONDS ?? 8);

function spawnServer(
  kind: 'bare' | 'amebo',
  env: Record<string, string> = {},
): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', new URL('./servers.ts', import.meta.url).pathname, kind], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${kind} server did not start`)), 30_000);
    child.stdout.on('data', (d: Buffer) => {
      const m = /READY (\d+)/.exec(d.toString());
      if (m) {
        clearTimeout(t);
        resolve({ port: Number(m[1]), child });
      }
    });
    child.on('exit', (code) => reject(new Error(`${kind} server exited ${code}`)));
  });
}

function load(
  url: string,
  body: string,
  headers: Record<string, string>,
  opts: { connections: number; rate?: number; seconds: number },
) {
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

const payload = () => {
  // ~1 KiB of realistic order data, valid against the schema below
  const items = Array.from({ length: 8 }, (_, i) => ({
    sku: `SKU-${i}-${randomBytes(6).toString('hex')}`,
    qty: i + 1,
    price: 9.99 + i,
  }));
  return {
    order_id: randomBytes(8).toString('hex'),
    user_id: 'u-12345',
    currency: 'USD',
    total: 123.45,
    items,
    note: 'x'.repeat(450),
  };
};

export async function run(): Promise<Section> {
  const id = randomBytes(4).toString('hex');
  const token = `bench-${id}`;
  const db = `amebo_bench_${id}`;
  const env = {
    AMEBO_DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${db}`,
    AMEBO_PREFIX: `bench${id}`,
    AMEBO_REDIS_PREFIX: `bench${id}:`,
    AMEBO_ADMIN_TOKEN: token,
    AMEBO_SECRET_KEY: `bench-secret-key-${id}`,
    AMEBO_DB_POOL: '8',
  };
  const bare = await spawnServer('bare');
  const amebo = await spawnServer('amebo', env);
  const base = `http://127.0.0.1:${amebo.port}`;
  const post = async (path: string, body: unknown) => {
    const r = await request(base + path, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await r.body.text();
    if (r.statusCode >= 300) throw new Error(`${path}: ${r.statusCode} ${text}`);
  };
  const notes: string[] = [];
  try {
    await post('/v1/applications', { application: 'orders', secret: 'orders-secret-0123456789' });
    await post('/v1/actions', {
      action: 'order.placed',
      application: 'orders',
      schemata: {
        type: 'object',
        properties: {
          order_id: { type: 'string' },
          user_id: { type: 'string' },
          currency: { type: 'string', enum: ['USD', 'EUR'] },
          total: { type: 'number', minimum: 0 },
          items: {
            type: 'array',
            items: {
              type: 'object',
              properties: { sku: { type: 'string' }, qty: { type: 'integer', minimum: 1 }, price: { type: 'number' } },
              required: ['sku', 'qty'],
            },
          },
          note: { type: 'string' },
        },
        required: ['order_id', 'user_id', 'items', 'total'],
      },
    });
    await post('/v1/subscriptions', {
      application: 'orders',
      subscription: 'sink',
      action: 'order.placed',
      transport: 'amqp',
    });
    const body = JSON.stringify({ action: 'order.placed', payload: payload() });
    const auth = { authorization: `Basic ${Buffer.from('orders:orders-secret-0123456789').toString('base64')}` };
    notes.push(
      `event body ${Buffer.byteLength(body)} bytes, 32 connections, ${DURATION} s per run; servers in their own processes, load from this one`,
    );
    await load(`http://127.0.0.1:${bare.port}/ingest`, body, {}, { connections: 32, seconds: 2 }); // warm-up
    await load(`${base}/v1/events`, body, auth, { connections: 32, seconds: 2 });
    const b = await load(`http://127.0.0.1:${bare.port}/ingest`, body, {}, { connections: 32, seconds: DURATION });
    const a = await load(`${base}/v1/events`, body, auth, { connections: 32, seconds: DURATION });
    if (a.non2xx) notes.push(`WARNING: ${a.non2xx} non-2xx answers from Amebo`);
    const fixed = await load(`${base}/v1/events`, body, auth, { connections: 32, rate: 1000, seconds: DURATION });
    const fixedBare = await load(
      `http://127.0.0.1:${bare.port}/ingest`,
      body,
      {},
      { connections: 32, rate: 1000, seconds: DURATION },
    );
    const c = new pg.Client({ connectionString: env.AMEBO_DATABASE_URL });
    await c.connect();
    const unpublished = (await c.query('SELECT count(*)::int AS n FROM outbox')).rows[0].n as number;
    const total = (await c.query('SELECT count(*)::int AS n FROM events')).rows[0].n as number;
    await c.end();
    notes.push(`${total} events stored, ${unpublished} awaiting their confirm mark at the end`);
    return {
      title: 'Publish path: POST /v1/events vs bare fastify JSON POST',
      rows: [
        {
          metric: 'throughput, 32 connections',
          amebo: a.requests.average,
          baseline: b.requests.average,
          unit: 'req/s',
          higherIsBetter: true,
        },
        { metric: 'p50 latency, 32 connections', amebo: a.latency.p50, baseline: b.latency.p50, unit: 'ms' },
        { metric: 'p99 latency, 32 connections', amebo: a.latency.p99, baseline: b.latency.p99, unit: 'ms' },
        {
          metric: 'p50 latency at 1,000 events/s',
          amebo: fixed.latency.p50,
          baseline: fixedBare.latency.p50,
          unit: 'ms',
        },
        {
          metric: 'p99 latency at 1,000 events/s',
          amebo: fixed.latency.p99,
          baseline: fixedBare.latency.p99,
          unit: 'ms',
        },
      ],
      notes,
    };
  } finally {
    bare.child.kill('SIGTERM');
    amebo.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1500));
    const c = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => undefined);
    await c.end();
    await dropBrokerObjects(`bench${id}`).catch(() => undefined);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { print } = await import('./run.js');
  print([await run()]);
}

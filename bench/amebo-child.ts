/**
 * Amebo as the product runs it, in a child process of the bench: `node bin/amebo.js serve` on a
 * free loopback port, its own database, RabbitMQ prefix and Redis prefix (all random, removed by
 * `destroy()`), so its CPU is read apart from the load generator's. `nodeArgs` adds node flags
 * (e.g. --cpu-prof), `bin` another checkout's bin/amebo.js (bench/ab.ts); BENCH_WORKERS sets AMEBO_WORKERS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { request } from 'undici';
import { dropBrokerObjects } from '../test/helpers/harness.js';
import { PG_ADMIN_URL } from './cpu.js';

const BIN = new URL('../bin/amebo.js', import.meta.url).pathname;
const PG_BASE = PG_ADMIN_URL.replace(/\/[^/]*$/, '');

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

export interface AmeboChild {
  id: string;
  url: string;
  child: ChildProcess;
  pid: number;
  db: string;
  prefix: string;
  adminToken: string;
  env: Record<string, string>;
  /** POST/DELETE/GET with the admin token (or `auth`); throws on a non-2xx answer. */
  call: (method: 'GET' | 'POST' | 'DELETE', p: string, body?: unknown, auth?: string) => Promise<Record<string, any>>;
  /** SIGTERM, then wait for the exit (SIGKILL after `graceMs`). Resolves to the exit code. */
  stop(graceMs?: number): Promise<number | null>;
  /** Stops it if running, drops its database and every broker object under its prefix. */
  destroy(): Promise<void>;
}

export async function startAmeboChild(
  opts: { roles: string; env?: Record<string, string>; nodeArgs?: string[]; bin?: string } = { roles: 'api,relay' },
): Promise<AmeboChild> {
  const id = randomBytes(4).toString('hex');
  const db = `amebo_bench_${id}`;
  const prefix = `bench${id}`;
  const adminToken = `bench-admin-${randomBytes(12).toString('hex')}`;
  const port = await freePort();
  const stateDir = path.join(tmpdir(), `amebo-bench-${id}`);
  const env: Record<string, string> = {
    AMEBO_ADDRESS: `127.0.0.1:${port}`,
    AMEBO_ROLES: opts.roles,
    AMEBO_DATABASE_URL: `${PG_BASE}/${db}`,
    AMEBO_PREFIX: prefix,
    AMEBO_ADMIN_TOKEN: adminToken,
    AMEBO_SECRET_KEY: `bench-secret-key-${id}-0123456789`,
    AMEBO_STATE_DIR: stateDir,
    AMEBO_LOG_LEVEL: 'warn',
    AMEBO_ALLOWED_TARGETS: '127.0.0.0/8,::1,localhost',
    AMEBO_WORKERS: process.env.BENCH_WORKERS ?? '1',
    ...opts.env,
  };
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.bin ?? BIN, 'serve'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  let exited: number | null | undefined;
  const exit = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      exited = code;
      r(code);
    }),
  );
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited !== undefined) throw new Error(`amebo serve exited ${exited} before answering`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('amebo serve did not answer /health within 60 s');
    }
    try {
      const r = await request(`${url}/health`, { headersTimeout: 2000, bodyTimeout: 2000 });
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const call: AmeboChild['call'] = async (method, p, body, auth) => {
    const r = await request(url + p, {
      method,
      headers: {
        authorization: auth ?? `Bearer ${adminToken}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: 60_000,
      bodyTimeout: 60_000,
    });
    const text = await r.body.text();
    if (r.statusCode >= 300) throw new Error(`${method} ${p}: ${r.statusCode} ${text}`);
    return JSON.parse(text || '{}') as Record<string, any>;
  };
  const stop = async (graceMs = 25_000): Promise<number | null> => {
    if (exited !== undefined) return exited;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const code = await exit;
    clearTimeout(t);
    return code;
  };
  return {
    id,
    url,
    child,
    pid: child.pid!,
    db,
    prefix,
    adminToken,
    env,
    call,
    stop,
    async destroy() {
      await stop();
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => undefined);
      await c.end();
      await dropBrokerObjects(prefix).catch(() => undefined);
      await dropRedisKeys(`${prefix}:`).catch(() => undefined);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Deletes the Redis keys under `root` (the child's AMEBO_PREFIX + ':'). */
async function dropRedisKeys(root: string): Promise<void> {
  const r = new Redis(process.env.AMEBO_REDIS_URL ?? 'redis://127.0.0.1:6379/0', { lazyConnect: true });
  await r.connect();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${root}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

/**
 * Fabric test helpers: unique domains per test (so tests never see each other's services), bounded
 * waits, connectors closed after each test, and closing one broker connection by name.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once, type EventEmitter } from 'node:events';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';
import amqp from 'amqplib';
import { FabricConnector, type FabricConnectorOptions } from '../../src/fabric/index.js';

export const AMQP_URL = process.env.AMEBO_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const REDIS_URL = process.env.AMEBO_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0';

export const hex = (n = 4): string => randomBytes(n).toString('hex');
/** A domain nobody else uses: every exchange and queue of the test lives under it. */
export const uniqueDomain = (): string => `t${hex()}`;

interface Opened {
  connectors: FabricConnector[];
  domains: Set<string>;
}
const opened = new WeakMap<TestContext, Opened>();

/**
 * Opens a connector; when the test ends, closes every connector it opened, then deletes the durable
 * exchanges of its domains (`{domain}.data`, `{domain}.log.records`), which would otherwise stay.
 */
export async function open(t: TestContext, opts: Omit<FabricConnectorOptions, 'amqpUrl'>): Promise<FabricConnector> {
  let o = opened.get(t);
  if (!o) {
    const mine: Opened = { connectors: [], domains: new Set() };
    opened.set(t, (o = mine));
    t.after(async () => {
      await Promise.all(mine.connectors.map((c) => c.close()));
      await deleteDomainExchanges([...mine.domains]);
    });
  }
  const c = new FabricConnector({ amqpUrl: AMQP_URL, ...opts });
  o.connectors.push(c);
  o.domains.add(opts.domain);
  await c.open({ timeoutMs: 10_000 });
  return c;
}

/** Deletes the durable per-domain exchanges a test created. */
export async function deleteDomainExchanges(domains: string[]): Promise<void> {
  if (!domains.length) return;
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    for (const d of domains) for (const ex of [`${d}.data`, `${d}.log.records`]) await ch.deleteExchange(ex);
  } finally {
    await conn.close();
  }
}

/** Polls `fn` until it returns a truthy value; fails after `timeoutMs`. */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs: number,
  what: string,
  everyMs = 25,
): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** The next `event` from `emitter` matching `filter`, bounded. */
export async function nextEvent<T>(
  emitter: EventEmitter,
  event: string,
  timeoutMs: number,
  filter: (v: T) => boolean = () => true,
): Promise<T> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), timeoutMs);
  try {
    for (;;) {
      const [v] = (await once(emitter, event, { signal: ac.signal })) as [T];
      if (filter(v)) return v;
    }
  } catch (err) {
    if (ac.signal.aborted) throw new Error(`no ${event} event within ${timeoutMs} ms`, { cause: err });
    throw err;
  } finally {
    clearTimeout(t);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Rejects if `p` takes longer than `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(t);
  }
}

const run = promisify(execFile);

/**
 * Has the broker close the connections whose `connection_name` is `name` (only ours: other
 * people's tests share the broker). Returns how many were closed.
 */
export async function closeConnectionsNamed(name: string): Promise<number> {
  const { stdout } = await run(
    'rabbitmqctl',
    ['list_connections', 'pid', 'client_properties', '-q', '--no-table-headers'],
    { timeout: 20_000 },
  );
  const needle = `{"connection_name","${name}"}`;
  const pids = stdout
    .split('\n')
    .filter((line) => line.includes(needle))
    .map((line) => line.split('\t')[0]!);
  for (const pid of pids)
    await run('rabbitmqctl', ['close_connection', pid, 'fabric test: forced close'], { timeout: 20_000 });
  return pids.length;
}

/** Measures how long `p` takes to settle, and how it settled. */
export async function timed<T>(p: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = Date.now();
  try {
    const value = await p;
    return { ms: Date.now() - t0, value };
  } catch (error) {
    return { ms: Date.now() - t0, error };
  }
}

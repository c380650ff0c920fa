/**
 * `npm run bench:broker`: what subscriptions cost the RabbitMQ node while idle. Against a throwaway
 * Amebo (`node bin/amebo.js serve`, roles api,bridge so every subscription queue has its consumer
 * as in a deployment; its own database and `bench<hex>` prefix), creates subscriptions through the
 * HTTP API up to each size of BENCH_BROKER_SIZES (100,1000) — each declares its quorum queue and
 * its quorum dead-letter queue, as Amebo does — and at each size reports the broker's memory
 * (VmRSS of beam.smp, and `rabbitmq-diagnostics memory_breakdown`) and its idle CPU over
 * BENCH_BROKER_IDLE_S (30) seconds. Then deletes every subscription through the API, drops every
 * object under its prefix and checks none is left (`rabbitmqctl list_queues name`).
 *
 * Two modes:
 *
 * - Shared (default): against the shared broker (AMEBO_TEST_AMQP_URL, 5672). It also counts the
 *   queues there before it starts: in all, by type, and those under test-run prefixes
 *   (`t<8 hex>.`, test/helpers/harness.ts testEnv) or bench prefixes. It deletes nothing it did
 *   not declare.
 * - Dedicated (BENCH_BROKER_DEDICATED=1): each scenario of BENCH_BROKER_SCENARIOS
 *   (amebo,quorum,classic,stream) runs on a fresh throwaway single node (bench/rabbit-node.ts:
 *   amebo-fp@localhost, AMQP 5695, its own cookie, data and logs under a temporary directory, a
 *   high `ulimit -n`, no plugins), stopped and removed after the scenario; every rabbitmqctl call
 *   names that node (`-n`) and the beam.smp measured is that node's. Scenarios:
 *   - `amebo`: Amebo's own topology through its API, as above (2 quorum queues per subscription).
 *   - `quorum`, `classic`, `stream`: the same objects declared directly with amqplib (the
 *     deployment's exchanges and 9-step retry ladder; per subscription its quorum queue with
 *     Amebo's arguments, bound as Amebo binds it, its retry ladder re-declared, one consumer on
 *     its own channel with Amebo's prefetch, and a bridge-like sampler that passive-declares every
 *     subscription queue and dead-letter queue every AMEBO_QUEUE_SAMPLE_MS) with the dead-letter
 *     queue as a quorum queue (what Amebo declares: the control), a classic durable queue, or one
 *     shared stream bound to the dead-letter exchange once per subscription (routing key = the
 *     subscription queue's name, as now). A probe checks that a rejected message reaches the
 *     dead-letter queue (or the stream) in each. BENCH_BROKER_RAW_SAMPLER=0 leaves the sampler
 *     out (the queues' own idle cost).
 *
 * Guard: RabbitMQ 3.x counts every socket and every quorum queue's open files (3 each) in its
 * file_handle_cache against a limit derived from the node's `ulimit -n` (927 for 1024); when the
 * count reaches the limit, new connections wait in rabbit_networking:setup_socket →
 * file_handle_cache:obtain() and AMQP handshakes hang (the 8-byte protocol header stays unread).
 * So before each step it reads `file_handle_cache:info()` (`rabbitmqctl eval`, read-only) and
 * stops growing before the count passes BENCH_BROKER_FHC_SHARE (0.6 shared, 0.9 dedicated) of the
 * limit, leaving room for the other users of the shared broker; it also stops when an AMQP
 * handshake (raw socket: protocol header → connection.start) takes more than 5 s. Cleanup goes
 * through Amebo's API, then `rabbitmqctl delete_queue` for anything left (works while handshakes
 * hang), then AMQP. BENCH_BROKER_DEADLINE_S (1500) bounds the whole run: past it, what runs is
 * stopped and removed and the run exits 3.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import amqp from 'amqplib';
import { loadConfig } from '../src/config.js';
import { NEVER_REACHED, Topology } from '../src/broker/topology.js';
import { beamPid, CLK_TCK, closeAdmin, procCpuUs, rssKiB } from './cpu.js';
import { startRabbitNode, type RabbitNode } from './rabbit-node.js';

const DEDICATED = process.env.BENCH_BROKER_DEDICATED === '1';
const SIZES = (process.env.BENCH_BROKER_SIZES ?? '100,1000').split(',').map(Number);
const IDLE_S = Number(process.env.BENCH_BROKER_IDLE_S ?? 30);
const ROLES = process.env.BENCH_BROKER_ROLES ?? 'api,bridge';
const CONCURRENCY = 4;
const FHC_SHARE = Number(process.env.BENCH_BROKER_FHC_SHARE ?? (DEDICATED ? 0.9 : 0.6));
const STEP = 50;
const DEADLINE_S = Number(process.env.BENCH_BROKER_DEADLINE_S ?? 1500);
const SCENARIOS = (DEDICATED ? (process.env.BENCH_BROKER_SCENARIOS ?? 'amebo,quorum,classic,stream') : 'amebo')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
for (const s of SCENARIOS)
  if (!['amebo', 'quorum', 'classic', 'stream'].includes(s)) throw new Error(`unknown scenario ${s}`);
const NODE_PORT = Number(process.env.BENCH_RABBIT_PORT ?? 5695);
/** The raw scenarios' bridge-like sampler (0 leaves it out, to see the queues' own idle cost). */
const RAW_SAMPLER = process.env.BENCH_BROKER_RAW_SAMPLER !== '0';

// The Amebo child's destroy() drops broker objects through test/helpers/harness.ts, which reads
// its AMQP URL when first imported: in dedicated mode, that is our node.
if (DEDICATED) process.env.AMEBO_TEST_AMQP_URL = `amqp://guest:guest@127.0.0.1:${NODE_PORT}`;
const { AMQP_URL } = await import('../test/helpers/harness.js');
const { startAmeboChild } = await import('./amebo-child.js');
type AmeboChild = Awaited<ReturnType<typeof startAmeboChild>>;

const sh = (cmd: string, args: string[], timeout = 120_000): Promise<string> =>
  new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout, maxBuffer: 64 * 1024 * 1024 }, (err, out) =>
      err ? reject(new Error(err.message)) : resolve(out),
    ),
  );
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The broker measured: the shared one, or a dedicated node (every CLI call then carries `-n`). */
interface Broker {
  what: string;
  url: string;
  host: string;
  port: number;
  pid(): number | undefined;
  ctl(args: string[], ms?: number): Promise<string>;
  diag(args: string[], ms?: number): Promise<string>;
}
const hostPort = (url: string): [string, number] => ((u) => [u.hostname, Number(u.port || 5672)])(new URL(url));
function sharedBroker(): Broker {
  const [host, port] = hostPort(AMQP_URL);
  return {
    what: `the shared broker (${host}:${port})`,
    url: AMQP_URL,
    host,
    port,
    pid: beamPid,
    ctl: (args, ms = 120_000) => sh('rabbitmqctl', ['-q', ...args], ms),
    diag: (args, ms = 120_000) => sh('rabbitmq-diagnostics', ['-q', ...args], ms),
  };
}
function dedicatedBroker(n: RabbitNode): Broker {
  return {
    what: `dedicated node ${n.name} (127.0.0.1:${n.port})`,
    url: n.amqpUrl,
    host: '127.0.0.1',
    port: n.port,
    pid: () => n.beamPid(),
    ctl: (args, ms = 120_000) => n.ctl(args, ms),
    diag: (args, ms = 120_000) => n.diag(args, ms),
  };
}

interface Queue {
  name: string;
  type: string;
}
async function listQueues(b: Broker): Promise<Queue[]> {
  const out = await b.ctl(['list_queues', 'name', 'type', '--no-table-headers']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[0])
    .map(([name, type]) => ({ name: name!, type: type ?? '?' }));
}

/** memory_breakdown in MB: the categories, and their sum. */
async function memoryBreakdown(b: Broker): Promise<{ total: number; parts: Record<string, number> }> {
  const out = await b.diag(['memory_breakdown', '--unit', 'mb']);
  const parts: Record<string, number> = {};
  for (const m of out.matchAll(/^(\w+): ([\d.]+) mb/gm)) parts[m[1]!] = Number(m[2]);
  return { total: Object.values(parts).reduce((a, c) => a + c, 0), parts };
}

/** file_handle_cache:info() of the node: [total_limit, total_used, sockets_used]. */
async function fhc(b: Broker): Promise<{ limit: number; used: number; sockets: number }> {
  const out = await b.ctl(['eval', 'file_handle_cache:info().'], 60_000);
  const n = (k: string) => Number(new RegExp(`\\{${k},(\\d+)\\}`).exec(out)?.[1] ?? NaN);
  return { limit: n('total_limit'), used: n('total_used'), sockets: n('sockets_used') };
}

/** ms from connecting to the broker's connection.start answering the protocol header; Infinity past `ms`. */
function handshakeMs(b: Broker, ms = 5000): Promise<number> {
  return new Promise((resolve) => {
    const t = performance.now();
    const sock = connect(b.port, b.host, () => sock.write(Buffer.from('AMQP\x00\x00\x09\x01', 'latin1')));
    const done = (v: number) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(Infinity), ms);
    sock.once('data', () => done(performance.now() - t));
    sock.once('error', () => done(Infinity));
  });
}

/** Deletes the queues under `prefix.` with rabbitmqctl (no AMQP connection needed), 4 at a time. */
async function deleteQueuesCli(b: Broker, prefix: string): Promise<number> {
  const names = (await listQueues(b)).map((q) => q.name).filter((n) => n.startsWith(`${prefix}.`));
  await pool(names, 4, async (n) => {
    await b.ctl(['delete_queue', n], 60_000).catch(() => undefined);
  });
  return names.length;
}

interface Sample {
  label: string;
  subscriptions: number;
  /** The 0-subscription reference of its scenario (per-subscription figures are taken against it). */
  ref?: boolean;
  /** Creating the subscriptions up to this size took this long in all (ms; guard checks left out). */
  createMs?: number;
  ourQueues: number;
  allQueues: number;
  rssMiB: number;
  breakdownMiB: number;
  /** memory_breakdown without allocated_unused and reserved_unallocated: what the node uses. */
  inUseMiB: number;
  quorumMiB: number;
  classicMiB: number;
  streamMiB: number;
  idleCpuMsPerS: number;
  handshakeMs: number;
  fhcUsed: number;
  fhcLimit: number;
}

async function sample(
  b: Broker,
  label: string,
  subscriptions: number,
  prefix: string | undefined,
  extra: Partial<Sample> = {},
): Promise<Sample> {
  const pid = b.pid();
  if (!pid) throw new Error(`no beam.smp process for ${b.what}`);
  // Let the declarations settle before reading the idle figures.
  await sleep(3000);
  const c0 = procCpuUs(pid) ?? 0;
  const t0 = performance.now();
  await sleep(IDLE_S * 1000);
  const c1 = procCpuUs(pid) ?? c0;
  const idle = (c1 - c0) / (performance.now() - t0); // µs per ms = ms per s
  const [qs, mem, hs, fh] = await Promise.all([listQueues(b), memoryBreakdown(b), handshakeMs(b), fhc(b)]);
  const p = (...k: string[]) => k.reduce((a, x) => a + (mem.parts[x] ?? 0), 0);
  const s: Sample = {
    label,
    subscriptions,
    ...extra,
    ourQueues: prefix ? qs.filter((q) => q.name.startsWith(`${prefix}.`)).length : 0,
    allQueues: qs.length,
    rssMiB: (rssKiB(pid) ?? 0) / 1024,
    breakdownMiB: mem.total,
    inUseMiB: mem.total - p('allocated_unused', 'reserved_unallocated'),
    quorumMiB: p('quorum_queue_procs', 'quorum_ets', 'quorum_queue_dlx_procs'),
    classicMiB: p('queue_procs', 'queue_slave_procs', 'msg_index'),
    streamMiB: p('stream_queue_procs', 'stream_queue_replica_reader_procs', 'stream_queue_coordinator_procs'),
    idleCpuMsPerS: idle,
    handshakeMs: hs,
    fhcUsed: fh.used,
    fhcLimit: fh.limit,
  };
  process.stderr.write(`${JSON.stringify(s)}\n`);
  return s;
}

async function pool<T>(items: T[], n: number, f: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) await f(items[i++]!);
    }),
  );
}

function inventory(qs: Queue[]): string[] {
  const byType = new Map<string, number>();
  for (const q of qs) byType.set(q.type, (byType.get(q.type) ?? 0) + 1);
  const test = qs.filter((q) => /^t[0-9a-f]{8}\./.test(q.name));
  const testPrefixes = new Set(test.map((q) => q.name.split('.')[0]));
  const bench = qs.filter((q) => /^bench[0-9a-f]{8}\./.test(q.name));
  const other = qs.filter((q) => !test.includes(q) && !bench.includes(q));
  const otherNames = [...new Set(other.map((q) => q.name.split('.').slice(0, 2).join('.')))];
  return [
    `queues on the broker: ${qs.length} (${[...byType].map(([t, n]) => `${n} ${t}`).join(', ')})`,
    `under test-run prefixes t<8 hex>.: ${test.length} queues (${test.filter((q) => q.type === 'quorum').length} quorum) of ${testPrefixes.size} prefixes`,
    `under bench prefixes bench<8 hex>.: ${bench.length} queues`,
    `other queues: ${other.length}${other.length ? ` (${otherNames.slice(0, 8).join(', ')}${otherNames.length > 8 ? ', …' : ''})` : ''}`,
  ];
}

interface Result {
  scenario: string;
  title: string;
  samples: Sample[];
  notes: string[];
  deleteMs?: number;
  deleted?: number;
}

/** What is running, for the deadline and signal handlers. */
const live: { amebo?: AmeboChild; node?: RabbitNode; conn?: amqp.ChannelModel } = {};

// --- Amebo through its API ---------------------------------------------------------------------

async function runAmebo(b: Broker): Promise<Result> {
  const samples: Sample[] = [];
  const notes: string[] = [];
  if (DEDICATED) samples.push(await sample(b, 'fresh node, no Amebo', 0, undefined));
  else {
    notes.push(...inventory(await listQueues(b)));
    samples.push(await sample(b, 'broker as found, no Amebo of ours', 0, undefined));
  }

  const sink = createServer((_req, res) => res.writeHead(200).end());
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  const handler = `http://127.0.0.1:${(sink.address() as { port: number }).port}/hook`;

  const ids: string[] = [];
  let createMs = 0;
  let deleteMs: number | undefined;
  let stopped = '';
  try {
    const a = (live.amebo = await startAmeboChild({
      roles: ROLES,
      env: DEDICATED ? { AMEBO_AMQP_URL: b.url } : {},
    }));
    const secret = 'footprint-secret-0123456789';
    await a.call('POST', '/v1/applications', { application: 'fp', secret });
    await a.call('POST', '/v1/actions', { action: 'fp.thing', application: 'fp', schemata: {} });
    samples.push(await sample(b, `Amebo (${ROLES}), 0 subscriptions`, 0, a.prefix, { ref: true }));
    for (const size of SIZES) {
      if (stopped) break;
      let errors = 0;
      const t = performance.now();
      let stepMs = 0;
      while (ids.length < size && !stopped) {
        const f = await fhc(b);
        const room = Math.floor((f.limit * FHC_SHARE - f.used) / 6); // 2 quorum queues × 3 handles
        if (room < 1) {
          stopped = `file_handle_cache at ${f.used} of ${f.limit} handles (${FHC_SHARE} of the limit reached) at ${ids.length} subscriptions`;
          break;
        }
        const todo = Array.from({ length: Math.min(STEP, room, size - ids.length) }, (_, k) => ids.length + k);
        const s0 = performance.now();
        await pool(todo, CONCURRENCY, async (k) => {
          if (stopped) return;
          try {
            const r = await a.call('POST', '/v1/subscriptions', {
              application: 'fp',
              subscription: `s${k}`,
              action: 'fp.thing',
              handler,
            });
            ids.push(String(r.id));
          } catch (err) {
            if (++errors > 5) stopped = `subscribe failed: ${(err as Error).message.slice(0, 200)}`;
          }
        });
        stepMs += performance.now() - s0;
        const hs = await handshakeMs(b);
        if (hs > 5000) stopped = `an AMQP handshake took over 5 s at ${ids.length} subscriptions`;
      }
      createMs += stepMs;
      process.stderr.write(
        `amebo: ${ids.length} subscriptions (${(stepMs / 1000).toFixed(0)} s creating, ${((performance.now() - t) / 1000).toFixed(0)} s with the guard's checks)\n`,
      );
      samples.push(
        await sample(b, `${ids.length} subscriptions${stopped ? ' (guard stopped it)' : ''}`, ids.length, a.prefix, {
          createMs,
        }),
      );
    }
    if (stopped) notes.push(`STOPPED GROWING: ${stopped}`);
    const t = performance.now();
    await pool([...ids], CONCURRENCY, async (id) => {
      await a.call('DELETE', `/v1/subscriptions/${id}`).catch(() => undefined);
    });
    deleteMs = performance.now() - t;
    notes.push(
      `${ids.length} subscriptions created in ${(createMs / 1000).toFixed(0)} s (${(createMs / Math.max(1, ids.length)).toFixed(0)} ms each, ${CONCURRENCY} at a time, through POST /v1/subscriptions), deleted through the API in ${(deleteMs / 1000).toFixed(0)} s`,
    );
    samples.push(await sample(b, 'after deleting the subscriptions (Amebo still up)', 0, a.prefix));
  } finally {
    const a = live.amebo;
    const prefix = a?.prefix;
    await a?.stop();
    if (prefix) {
      const n = await deleteQueuesCli(b, prefix);
      if (n)
        notes.push(
          `${n} queues left after the API deletes (the deployment's retry ladder, and any a delete missed); removed with rabbitmqctl delete_queue`,
        );
    }
    await a?.destroy();
    live.amebo = undefined;
    sink.close();
    await closeAdmin();
    if (prefix) {
      const left = (await listQueues(b)).filter((q) => q.name.startsWith(`${prefix}.`)).length;
      notes.push(
        `cleanup: ${left} queues left under ${prefix}. (rabbitmqctl list_queues name | grep ${prefix} | wc -l)`,
      );
    }
  }
  if (!DEDICATED) samples.push(await sample(b, 'after cleanup', 0, undefined));
  return {
    scenario: 'amebo',
    title: `Amebo's topology through its API (quorum queue + quorum dead-letter queue per subscription), ${b.what}`,
    samples,
    notes,
    deleteMs,
    deleted: ids.length,
  };
}

// --- The same objects declared directly, with another dead-letter queue ---------------------------

type DeadKind = 'quorum' | 'classic' | 'stream';

async function runRaw(b: Broker, kind: DeadKind): Promise<Result> {
  const cfg = loadConfig({}, {});
  const prefix = `fp${randomBytes(4).toString('hex')}`;
  const topo = new Topology({ prefix, queueType: 'quorum', deliveryLimit: cfg.deliveryLimit });
  const delays = cfg.retrySchedule.map((s) => s * 1000);
  const stream = `${prefix}.dead.stream`;
  const samples: Sample[] = [];
  const notes: string[] = [];
  const conn = (live.conn = await amqp.connect(b.url));
  conn.on('error', () => undefined);
  const subs: { q: string; dq: string; ch: amqp.Channel }[] = [];
  let sampler: NodeJS.Timeout | undefined;
  try {
    const admin = await conn.createChannel();
    await topo.declareBase(admin, delays);
    if (kind === 'stream') await admin.assertQueue(stream, { durable: true, arguments: { 'x-queue-type': 'stream' } });

    // As bridge/sampler.ts: every queueSampleMs, a passive declare of each subscription queue and
    // its dead-letter queue on a throwaway channel, bounded by min(10 s, the interval).
    let sampling: Promise<void> | undefined;
    const round = async () => {
      const names = kind === 'stream' ? [...subs.map((s) => s.q), stream] : subs.flatMap((s) => [s.q, s.dq]);
      const deadline = Date.now() + Math.min(10_000, cfg.queueSampleMs);
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      try {
        for (const n of names) {
          if (Date.now() > deadline) break;
          await ch.checkQueue(n);
        }
      } finally {
        await ch.close().catch(() => undefined);
      }
    };
    const tick = () => {
      sampling ??= round()
        .catch(() => undefined)
        .finally(() => (sampling = undefined));
    };
    if (RAW_SAMPLER) {
      sampler = setInterval(tick, cfg.queueSampleMs);
      tick();
    }

    // Mirrors Topology.declareSubscription (src/broker/topology.ts) but for the dead-letter queue.
    const declare = async (ch: amqp.Channel, k: number) => {
      const q = topo.subscriptionQueue('fp', `s${k}`);
      const dq = topo.deadQueue('fp', `s${k}`);
      if (kind === 'stream') await ch.bindQueue(stream, topo.dead, q);
      else {
        await ch.assertQueue(dq, {
          durable: true,
          arguments:
            kind === 'quorum'
              ? { 'x-queue-type': 'quorum', 'x-delivery-limit': NEVER_REACHED }
              : { 'x-queue-type': 'classic' },
        });
        await ch.bindQueue(dq, topo.dead, q);
      }
      await ch.assertQueue(q, { durable: true, arguments: topo.subscriptionQueueArgs('fp', `s${k}`, false) });
      await ch.bindQueue(q, topo.redeliver, q);
      await ch.bindQueue(q, topo.events, 'fp.thing');
      for (const d of delays) await topo.declareRetry(ch, d);
      // The bridge's consumer: its own channel, Amebo's prefetch; anything delivered is rejected
      // (dead-lettered), which the probe below uses.
      const cc = await conn.createChannel();
      cc.on('error', () => undefined);
      await cc.prefetch(cfg.prefetch);
      await cc.consume(q, (m) => {
        if (m) cc.nack(m, false, false);
      });
      subs[k] = { q, dq, ch: cc };
    };
    const workers = await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        const ch = await conn.createChannel();
        ch.on('error', () => undefined);
        return ch;
      }),
    );

    samples.push(
      await sample(
        b,
        `deployment objects${RAW_SAMPLER ? ' and sampler' : ', no sampler'}, 0 subscriptions`,
        0,
        prefix,
        {
          ref: true,
        },
      ),
    );
    let createMs = 0;
    let stopped = '';
    let probed = false;
    for (const size of SIZES) {
      if (stopped) break;
      const f = await fhc(b);
      const need = (size - subs.length) * 6;
      if (f.used + need > f.limit * FHC_SHARE) {
        stopped = `file_handle_cache at ${f.used} of ${f.limit} handles: ${size} subscriptions would pass ${FHC_SHARE} of the limit`;
        break;
      }
      const todo = Array.from({ length: size - subs.length }, (_, k) => subs.length + k);
      const t = performance.now();
      let next = 0;
      await Promise.all(
        workers.map(async (ch) => {
          while (next < todo.length) await declare(ch, todo[next++]!);
        }),
      );
      createMs += performance.now() - t;
      process.stderr.write(
        `${kind}: ${subs.length} subscriptions (${((performance.now() - t) / 1000).toFixed(0)} s)\n`,
      );
      if (!probed) {
        probed = true;
        notes.push(await probe(conn, kind, subs[0]!.q, kind === 'stream' ? stream : subs[0]!.dq));
      }
      if ((await handshakeMs(b)) > 5000) stopped = `an AMQP handshake took over 5 s at ${subs.length} subscriptions`;
      samples.push(await sample(b, `${subs.length} subscriptions`, subs.length, prefix, { createMs }));
    }
    if (stopped) notes.push(`STOPPED GROWING: ${stopped}`);
    clearInterval(sampler);
    sampler = undefined;
    await sampling;
    for (const s of subs) await s.ch.close().catch(() => undefined);
    const t = performance.now();
    let next = 0;
    await Promise.all(
      workers.map(async (ch) => {
        while (next < subs.length) {
          const s = subs[next++]!;
          await ch.deleteQueue(s.q);
          if (kind !== 'stream') await ch.deleteQueue(s.dq);
          else await ch.unbindQueue(stream, topo.dead, s.q);
        }
      }),
    );
    const deleteMs = performance.now() - t;
    notes.push(
      `${subs.length} subscriptions declared in ${(createMs / 1000).toFixed(0)} s (${(createMs / Math.max(1, subs.length)).toFixed(0)} ms each, ${CONCURRENCY} at a time, consumer included); their queues deleted in ${(deleteMs / 1000).toFixed(0)} s (consumers cancelled first)`,
    );
    samples.push(await sample(b, 'after deleting the subscription queues', 0, prefix));
    return {
      scenario: kind,
      title: `the same objects declared with amqplib, dead-letter queue: ${
        kind === 'quorum'
          ? 'quorum (as Amebo declares it; the control)'
          : kind === 'classic'
            ? 'classic durable queue'
            : 'one shared stream for every subscription'
      }${RAW_SAMPLER ? '' : ', no sampler'}, ${b.what}`,
      samples,
      notes,
      deleteMs,
      deleted: subs.length,
    };
  } finally {
    if (sampler) clearInterval(sampler);
    await conn.close().catch(() => undefined);
    live.conn = undefined;
  }
}

/** Publishes one message to `q`; its consumer rejects it; checks it reaches `dead`. */
async function probe(conn: amqp.ChannelModel, kind: DeadKind, q: string, dead: string): Promise<string> {
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    ch.sendToQueue(q, Buffer.from('{"probe":true}'), { persistent: true, messageId: 'probe' });
    const deadline = Date.now() + 10_000;
    if (kind !== 'stream') {
      while (Date.now() < deadline) {
        if ((await ch.checkQueue(dead)).messageCount === 1) return `probe: a rejected message reached ${dead}`;
        await sleep(100);
      }
      return `PROBE FAILED: the rejected message did not reach ${dead} in 10 s`;
    }
    await ch.prefetch(10);
    const got = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), deadline - Date.now());
      void ch.consume(
        dead,
        (m) => {
          if (!m || m.properties.messageId !== 'probe') return;
          clearTimeout(timer);
          resolve(true);
        },
        { arguments: { 'x-stream-offset': 'first' } },
      );
    });
    return got
      ? `probe: a rejected message reached the stream ${dead} (read back from offset first)`
      : `PROBE FAILED: the rejected message was not read back from ${dead} in 10 s`;
  } finally {
    await ch.close().catch(() => undefined);
  }
}

// --- run -------------------------------------------------------------------------------------------

async function abandon(why: string, code: number): Promise<never> {
  process.stderr.write(`broker-footprint: ${why}; stopping what runs\n`);
  await live.conn?.close().catch(() => undefined);
  await Promise.race([live.amebo?.destroy().catch(() => undefined), sleep(30_000)]);
  await live.node?.stop().catch(() => undefined);
  process.exit(code);
}
const deadline = setTimeout(() => void abandon(`past BENCH_BROKER_DEADLINE_S (${DEADLINE_S} s)`, 3), DEADLINE_S * 1000);
deadline.unref();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => void abandon(sig, 130));

const started = new Date();
const results: Result[] = [];
let nodeInfo = '';
for (const scenario of SCENARIOS) {
  let b: Broker;
  if (DEDICATED) {
    const t = performance.now();
    const node = (live.node = await startRabbitNode({ port: NODE_PORT }));
    b = dedicatedBroker(node);
    if (!nodeInfo) {
      const version = (await node.ctl(['version'])).trim();
      const f = await fhc(b);
      nodeInfo = `RabbitMQ ${version}, a fresh single node per scenario (${node.name}, AMQP 127.0.0.1:${node.port}, distribution ${node.distPort}, no plugins; up in ${((performance.now() - t) / 1000).toFixed(0)} s), open files ${node.nofile()} → file_handle_cache limit ${f.limit}`;
    }
  } else b = sharedBroker();
  try {
    results.push(scenario === 'amebo' ? await runAmebo(b) : await runRaw(b, scenario as DeadKind));
  } finally {
    await live.node?.stop();
    live.node = undefined;
  }
}

const f = (n: number, d = 0) => n.toFixed(d);
const out: string[] = [
  `\n## Broker footprint (${started.toISOString()}, ${IDLE_S} s idle windows, CLK_TCK ${CLK_TCK})\n`,
];
if (nodeInfo) out.push(`${nodeInfo}\n`);
for (const r of results) {
  out.push(
    `\n### ${r.scenario}: ${r.title}\n`,
    `| stage | subscriptions | our queues | all queues | beam RSS MiB | memory_breakdown MiB | in use MiB | quorum MiB | classic MiB | stream MiB | idle CPU ms/s | AMQP handshake ms | file handles used / limit |\n`,
    `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n`,
    ...r.samples.map(
      (s) =>
        `| ${s.label} | ${s.subscriptions} | ${s.ourQueues} | ${s.allQueues} | ${f(s.rssMiB)} | ${f(s.breakdownMiB)} | ${f(s.inUseMiB)} | ${f(s.quorumMiB, 1)} | ${f(s.classicMiB, 1)} | ${f(s.streamMiB, 1)} | ${f(s.idleCpuMsPerS, 1)} | ${f(s.handshakeMs)} | ${s.fhcUsed} / ${s.fhcLimit} |\n`,
    ),
    ...r.notes.map((n) => `- ${n}\n`),
  );
}
// Per subscription, against each scenario's 0-subscription reference.
out.push(
  `\n### Per subscription (against each scenario's 0-subscription row)\n`,
  `| scenario | subscriptions | in use KiB/sub | beam RSS KiB/sub | queue memory KiB/sub | idle CPU ms/s per 100 subs | file handles/sub | create ms/sub | delete ms/sub |\n`,
  `|---|---:|---:|---:|---:|---:|---:|---:|---:|\n`,
);
for (const r of results) {
  const ref = r.samples.find((s) => s.ref);
  if (!ref) continue;
  for (const s of r.samples.filter((x) => x.createMs !== undefined && x.subscriptions > 0)) {
    const n = s.subscriptions;
    const q = (x: Sample) => x.quorumMiB + x.classicMiB + x.streamMiB;
    const last = s === r.samples.filter((x) => x.createMs !== undefined).at(-1);
    out.push(
      `| ${r.scenario} | ${n} | ${f(((s.inUseMiB - ref.inUseMiB) * 1024) / n)} | ${f(((s.rssMiB - ref.rssMiB) * 1024) / n)} | ${f(((q(s) - q(ref)) * 1024) / n)} | ${f(((s.idleCpuMsPerS - ref.idleCpuMsPerS) / n) * 100, 1)} | ${f((s.fhcUsed - ref.fhcUsed) / n, 1)} | ${f(s.createMs! / n)} | ${last && r.deleteMs !== undefined && r.deleted ? f(r.deleteMs / r.deleted) : ''} |\n`,
    );
  }
}
process.stdout.write(out.join(''));
process.exit(0);

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
 * It also counts the queues on the shared broker before it starts: in all, by type, and those
 * under test-run prefixes (`t<8 hex>.`, test/helpers/harness.ts testEnv) or bench prefixes. It
 * deletes nothing it did not declare.
 *
 * Guard: RabbitMQ 3.x counts every socket and every quorum queue's open files (3 each) in its
 * file_handle_cache against a limit derived from the node's `ulimit -n` (927 for 1024); when the
 * count reaches the limit, new connections wait in rabbit_networking:setup_socket →
 * file_handle_cache:obtain() and AMQP handshakes hang (the 8-byte protocol header stays unread).
 * So before each step it reads `file_handle_cache:info()` (`rabbitmqctl eval`, read-only) and
 * stops growing before the count passes BENCH_BROKER_FHC_SHARE (0.6) of the limit, leaving room
 * for the other users of the shared broker; it also stops when an AMQP handshake (raw socket:
 * protocol header → connection.start) takes more than 5 s. Cleanup goes through Amebo's API, then
 * `rabbitmqctl delete_queue` for anything left (works while handshakes hang), then AMQP.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { AMQP_URL } from '../test/helpers/harness.js';
import { startAmeboChild, type AmeboChild } from './amebo-child.js';
import { beamPid, CLK_TCK, closeAdmin, procCpuUs, rssKiB } from './cpu.js';

const SIZES = (process.env.BENCH_BROKER_SIZES ?? '100,1000').split(',').map(Number);
const IDLE_S = Number(process.env.BENCH_BROKER_IDLE_S ?? 30);
const ROLES = process.env.BENCH_BROKER_ROLES ?? 'api,bridge';
const CONCURRENCY = 4;
const FHC_SHARE = Number(process.env.BENCH_BROKER_FHC_SHARE ?? 0.6);
const STEP = 50;
const [AMQP_HOST, AMQP_PORT] = ((u) => [u.hostname, Number(u.port || 5672)])(new URL(AMQP_URL));

const sh = (cmd: string, args: string[], timeout = 120_000): Promise<string> =>
  new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout, maxBuffer: 64 * 1024 * 1024 }, (err, out) =>
      err ? reject(new Error(err.message)) : resolve(out),
    ),
  );

interface Queue {
  name: string;
  type: string;
}
async function listQueues(): Promise<Queue[]> {
  const out = await sh('rabbitmqctl', ['-q', 'list_queues', 'name', 'type', '--no-table-headers']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[0])
    .map(([name, type]) => ({ name: name!, type: type ?? '?' }));
}

/** memory_breakdown in MB: the categories, and their sum. */
async function memoryBreakdown(): Promise<{ total: number; parts: Record<string, number> }> {
  const out = await sh('rabbitmq-diagnostics', ['-q', 'memory_breakdown', '--unit', 'mb']);
  const parts: Record<string, number> = {};
  for (const m of out.matchAll(/^(\w+): ([\d.]+) mb/gm)) parts[m[1]!] = Number(m[2]);
  return { total: Object.values(parts).reduce((a, b) => a + b, 0), parts };
}

/** file_handle_cache:info() of the node: [total_limit, total_used, sockets_used]. */
async function fhc(): Promise<{ limit: number; used: number; sockets: number }> {
  const out = await sh('rabbitmqctl', ['eval', 'file_handle_cache:info().'], 60_000);
  const n = (k: string) => Number(new RegExp(`\\{${k},(\\d+)\\}`).exec(out)?.[1] ?? NaN);
  return { limit: n('total_limit'), used: n('total_used'), sockets: n('sockets_used') };
}

/** ms from connecting to the broker's connection.start answering the protocol header; Infinity past `ms`. */
function handshakeMs(ms = 5000): Promise<number> {
  return new Promise((resolve) => {
    const t = performance.now();
    const sock = connect(AMQP_PORT, AMQP_HOST, () => sock.write(Buffer.from('AMQP\x00\x00\x09\x01', 'latin1')));
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
async function deleteQueuesCli(prefix: string): Promise<number> {
  const names = (await listQueues()).map((q) => q.name).filter((n) => n.startsWith(`${prefix}.`));
  await pool(names, 4, async (n) => {
    await sh('rabbitmqctl', ['-q', 'delete_queue', n], 60_000).catch(() => undefined);
  });
  return names.length;
}

interface Sample {
  label: string;
  subscriptions: number;
  ourQueues: number;
  allQueues: number;
  rssMiB: number;
  breakdownMiB: number;
  quorumMiB: number;
  idleCpuMsPerS: number;
  handshakeMs: number;
  fhcUsed: number;
  fhcLimit: number;
}

async function sample(label: string, subscriptions: number, prefix: string | undefined): Promise<Sample> {
  const pid = beamPid();
  if (!pid) throw new Error('no beam.smp process on this machine');
  // Let the declarations settle before reading the idle figures.
  await new Promise((r) => setTimeout(r, 3000));
  const c0 = procCpuUs(pid) ?? 0;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, IDLE_S * 1000));
  const c1 = procCpuUs(pid) ?? c0;
  const idle = (c1 - c0) / (performance.now() - t0); // µs per ms = ms per s
  const [qs, mem, hs, fh] = await Promise.all([listQueues(), memoryBreakdown(), handshakeMs(), fhc()]);
  const s: Sample = {
    label,
    subscriptions,
    ourQueues: prefix ? qs.filter((q) => q.name.startsWith(`${prefix}.`)).length : 0,
    allQueues: qs.length,
    rssMiB: (rssKiB(pid) ?? 0) / 1024,
    breakdownMiB: mem.total,
    quorumMiB:
      (mem.parts.quorum_queue_procs ?? 0) + (mem.parts.quorum_ets ?? 0) + (mem.parts.quorum_queue_dlx_procs ?? 0),
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

const started = new Date();
const notes: string[] = [];
const before = await listQueues();
notes.push(...inventory(before));
const samples: Sample[] = [await sample('broker as found, no Amebo of ours', 0, undefined)];

const sink = createServer((_req, res) => res.writeHead(200).end());
await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
const handler = `http://127.0.0.1:${(sink.address() as { port: number }).port}/hook`;

let amebo: AmeboChild | undefined;
const ids: string[] = [];
let createMs = 0;
let stopped = '';
try {
  amebo = await startAmeboChild({ roles: ROLES });
  const a = amebo;
  const secret = 'footprint-secret-0123456789';
  await a.call('POST', '/v1/applications', { application: 'fp', secret });
  await a.call('POST', '/v1/actions', { action: 'fp.thing', application: 'fp', schemata: {} });
  samples.push(await sample(`Amebo (${ROLES}), 0 subscriptions`, 0, a.prefix));
  for (const size of SIZES) {
    if (stopped) break;
    let errors = 0;
    const t = performance.now();
    while (ids.length < size && !stopped) {
      const f = await fhc();
      const room = Math.floor((f.limit * FHC_SHARE - f.used) / 6); // 2 quorum queues × 3 handles
      if (room < 1) {
        stopped = `file_handle_cache at ${f.used} of ${f.limit} handles (${FHC_SHARE} of the limit reached) at ${ids.length} subscriptions`;
        break;
      }
      const todo = Array.from({ length: Math.min(STEP, room, size - ids.length) }, (_, k) => ids.length + k);
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
      const hs = await handshakeMs();
      if (hs > 5000) stopped = `an AMQP handshake took over 5 s at ${ids.length} subscriptions`;
    }
    createMs += performance.now() - t;
    process.stderr.write(`${ids.length} subscriptions (${((performance.now() - t) / 1000).toFixed(0)} s)\n`);
    samples.push(await sample(`${ids.length} subscriptions`, ids.length, a.prefix));
  }
  if (stopped) notes.push(`STOPPED GROWING: ${stopped}`);
  const t = performance.now();
  await pool([...ids], CONCURRENCY, async (id) => {
    await a.call('DELETE', `/v1/subscriptions/${id}`).catch(() => undefined);
  });
  notes.push(
    `${ids.length} subscriptions created in ${(createMs / 1000).toFixed(0)} s (${(createMs / Math.max(1, ids.length)).toFixed(0)} ms each, ${CONCURRENCY} at a time), deleted in ${((performance.now() - t) / 1000).toFixed(0)} s`,
  );
  samples.push(await sample('after deleting the subscriptions (Amebo still up)', 0, a.prefix));
} finally {
  const prefix = amebo?.prefix;
  await amebo?.stop();
  if (prefix) {
    const n = await deleteQueuesCli(prefix);
    if (n)
      notes.push(
        `${n} queues left after the API deletes (the deployment's retry ladder, and any a delete missed); removed with rabbitmqctl delete_queue`,
      );
  }
  await amebo?.destroy();
  sink.close();
  await closeAdmin();
  if (prefix) {
    const left = (await listQueues()).filter((q) => q.name.startsWith(`${prefix}.`)).length;
    notes.push(`cleanup: ${left} queues left under ${prefix}. (rabbitmqctl list_queues name | grep ${prefix} | wc -l)`);
  }
}
samples.push(await sample('after cleanup', 0, undefined));

const f = (n: number, d = 0) => n.toFixed(d);
process.stdout.write(
  `\n## Broker footprint (${started.toISOString()}, ${IDLE_S} s idle windows, CLK_TCK ${CLK_TCK})\n` +
    `| stage | subscriptions | our queues | all queues | beam RSS MiB | memory_breakdown MiB | quorum MiB | idle CPU ms/s | AMQP handshake ms | file handles used / limit |\n` +
    `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n` +
    samples
      .map(
        (s) =>
          `| ${s.label} | ${s.subscriptions} | ${s.ourQueues} | ${s.allQueues} | ${f(s.rssMiB)} | ${f(s.breakdownMiB)} | ${f(s.quorumMiB, 1)} | ${f(s.idleCpuMsPerS, 1)} | ${f(s.handshakeMs)} | ${s.fhcUsed} / ${s.fhcLimit} |`,
      )
      .join('\n') +
    '\n' +
    notes.map((n) => `- ${n}\n`).join(''),
);
process.exit(0);

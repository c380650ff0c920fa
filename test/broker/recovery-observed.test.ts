import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { Broker } from '../../src/broker/connection.js';
import type { ReconnectAttempt } from '../../src/broker/link.js';
import { registry } from '../../src/metrics.js';
import { AMQP_URL, eventually, hex } from '../helpers/harness.js';
import { TcpProxy } from '../helpers/proxy.js';

// Issue "Production on a RabbitMQ cluster": during an outage the only log line was one "broker
// connection lost", because failed reconnects were logged at debug. Every failed attempt must be
// logged at warn with the node it tried, reported as a `reconnecting` event, and visible in
// /metrics (amebo_amqp_connected, amebo_amqp_connect_failures_total{node},
// amebo_amqp_channels_ready{channel}). Two proxies in front of the shared broker stand for two
// nodes of a cluster; both refuse for a while, then the first lets connections through again.
const node1 = new TcpProxy(5672);
const node2 = new TcpProxy(5672);
let broker: Broker | null = null;
after(async () => {
  await broker?.close();
  await node1.close();
  await node2.close();
});

interface Line {
  level: number;
  msg: string;
  node?: string;
  attempt?: number;
}

async function metric(name: string, labels: Record<string, string>): Promise<number | null> {
  const m = await registry.getSingleMetric(name)?.get();
  const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v ? v.value : null;
}

test('every failed reconnect is logged at warn with the node it tried, reported, and counted in /metrics', async () => {
  const [p1, p2] = [await node1.listen(), await node2.listen()];
  const lines: Line[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Line);
      done();
    },
  });
  const connection = `recovery-observed-${hex()}`;
  const channel = `observed ${connection}`;
  broker = new Broker({
    url: `amqp://guest:guest@127.0.0.1:${p1},amqp://guest:guest@127.0.0.1:${p2}`,
    logger: pino({ level: 'debug' }, sink),
    name: connection,
  });
  await broker.open(10_000);
  const mc = broker.channel({ name: channel });
  await mc.open();
  assert.equal(await metric('amebo_amqp_connected', { connection }), 1);
  assert.equal(await metric('amebo_amqp_channels_ready', { channel }), 1);

  const attempts: ReconnectAttempt[] = [];
  broker.on('reconnecting', (a) => void attempts.push(a));
  const errors: Error[] = [];
  broker.on('error', (e) => void errors.push(e));
  node1.refuse(true);
  node2.refuse(true);
  node1.cut();
  // Both nodes refuse: at least two rounds over the two nodes (with backoff between rounds).
  await eventually(() => attempts.length >= 4, 30_000);
  assert.equal(await metric('amebo_amqp_connected', { connection }), 0, 'the connection gauge says it is down');
  assert.equal(await metric('amebo_amqp_channels_ready', { channel }), 0, 'the channel gauge says it is down');

  const tried = new Set(attempts.map((a) => a.node));
  const n1 = `amqp://guest:***@127.0.0.1:${p1}?heartbeat=10`;
  const n2 = `amqp://guest:***@127.0.0.1:${p2}?heartbeat=10`;
  assert.deepEqual([...tried].sort(), [n1, n2].sort(), 'each attempt names its node, password redacted');
  assert.ok(errors.length >= attempts.length - 1, 'each failure is also an error event (someone listens)');
  const failures = lines.filter((l) => /cannot connect to /.test(l.msg));
  assert.ok(failures.length >= 4, `failed attempts logged: ${failures.length}`);
  for (const l of failures) {
    assert.equal(l.level, 40, `logged at warn, not debug: ${l.msg}`);
    assert.ok(l.node === n1 || l.node === n2, `names the node it tried: ${JSON.stringify(l)}`);
    assert.ok(l.msg.includes(l.node), 'the message names the node too');
  }
  assert.ok(
    lines.every((l) => !JSON.stringify(l).includes('guest:guest')),
    'no password in the logs',
  );
  for (const node of [n1, n2])
    assert.ok(
      ((await metric('amebo_amqp_connect_failures_total', { connection, node })) ?? 0) >= 1,
      `failures counted for ${node}`,
    );

  // The first node comes back: the connection and its channel recover and say so.
  // (Not events.once: it would reject on the `error` of an attempt on node 2 meanwhile.)
  const b = broker;
  const ready = Promise.all([new Promise((r) => mc.once('ready', r)), new Promise((r) => b.once('ready', r))]);
  node1.refuse(false);
  await ready;
  assert.equal(broker.node, n1);
  assert.equal(await metric('amebo_amqp_connected', { connection }), 1);
  assert.equal(await metric('amebo_amqp_channels_ready', { channel }), 1);
  assert.ok(
    lines.some((l) => l.level === 40 && l.msg === `amqp: connected to ${n1} (recovered)`),
    'the recovery is logged at warn',
  );
});

test('a channel whose rebuild fails is retried with backoff, each failure at warn naming the channel and node', async () => {
  const lines: (Line & { channel?: string; delayMs?: number })[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Line);
      done();
    },
  });
  const b = new Broker({ url: AMQP_URL, logger: pino({ level: 'debug' }, sink), name: `rebuild-${hex()}` });
  await b.open(10_000);
  try {
    const name = `flaky ${hex()}`;
    let failing = 0;
    const mc = b.channel({
      name,
      setup: async () => {
        if (failing > 0) {
          failing--;
          throw new Error('not yet');
        }
      },
    });
    await mc.open();
    failing = 2;
    const back = new Promise((r) => mc.once('ready', r));
    mc.reset(); // the channel closes while the connection lives: rebuilt, twice in vain, then it works
    await back;
    assert.equal(await metric('amebo_amqp_channels_ready', { channel: name }), 1);
    const failures = lines.filter((l) => l.msg.startsWith(`rebuilding channel "${name}" failed`));
    assert.equal(failures.length, 2, JSON.stringify(lines.map((l) => l.msg)));
    failures.forEach((l, i) => {
      assert.equal(l.level, 40, 'at warn');
      assert.equal(l.channel, `channel "${name}"`);
      assert.equal(l.node, b.node, 'names the node');
      const step = 200 * 2 ** (i + 1);
      assert.ok(l.delayMs! >= step / 2 && l.delayMs! <= step, `backoff ${l.delayMs} ms within [${step / 2}, ${step}]`);
    });
  } finally {
    await b.close();
  }
});

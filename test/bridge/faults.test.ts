import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { destroy, eventually, http, record, start, testEnv, type Running, type TestEnv } from '../helpers/harness.js';
import { TcpProxy } from '../helpers/proxy.js';
import { bridgeOf, bridgeStarter, type BridgeOptions } from '../../bridge/index.js';
import { Breaker } from '../../bridge/breaker.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { Receiver, seed } from './receiver.js';
import type { Command, Redis } from 'ioredis';

// Delivery faults the chaos suite found (issue "Production on a RabbitMQ cluster" §5), each on the
// shared services: an ordered subscription that waited out a long retry step after its receiver
// was back, Redis away slowing every ordered delivery to the command timeout, and redelivered
// copies that said `x-amebo-attempt: 1`.
const redisProxy = new TcpProxy(6379);
let env: TestEnv;
let srv: Running;
const rx = new Receiver();
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let APP: [string, string];

const bridge = (opts: BridgeOptions = {}) =>
  start(env, { parts: [bridgeStarter({ breaker: false, ...opts })], plugins: [deliveryPlugin] });

before(async () => {
  await rx.listen();
  const port = await redisProxy.listen();
  env = testEnv({ redisUrl: `redis://127.0.0.1:${port}/0`, orderedProbeMs: 400 });
  srv = await bridge();
  APP = await seed(call, 'ops', ['ops.ledger', 'ops.slow']);
});
after(async () => {
  await srv?.close();
  await rx.close();
  await redisProxy.close();
  await destroy(env);
});

const publish = async (action: string, payload: unknown): Promise<string> => {
  const r = await call('POST', '/v1/events', { action, payload }, APP);
  assert.equal(r.status, 202);
  return r.body.event as string;
};

const subscribe = async (name: string, action: string, extra: Record<string, unknown>) => {
  const s = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'ops', subscription: name, action, handler: rx.url(`/${name}`), ...extra },
    'admin',
  );
  assert.equal(s.status, 201, JSON.stringify(s.body));
  return s.body as { id: string; queue: string };
};

test('ordered: a receiver back during a long retry step is served by a probe, not after the step, in order', async () => {
  // The ladder's second step is an hour (held at most 20 min): without probes the head would wait
  // for it, far beyond the hang guard below; with probes (every 400 ms) it goes as soon as the
  // receiver answers.
  await subscribe('ledger', 'ops.ledger', { ordered: true, retry_schedule: [1, 3600], max_attempts: 5 });
  let down = true;
  rx.on('/ledger', () => (down ? { status: 503 } : { status: 200 }));
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await publish('ops.ledger', { i }));
  // The head is tried, fails, waits its 1 s step, fails again: now it is on the long step.
  await eventually(() => rx.at('/ledger').length >= 2, 30_000);
  down = false;
  await eventually(() => new Set(rx.at('/ledger').map((r) => r.json.id as string)).size === 5, 60_000);
  const firsts: string[] = [];
  for (const r of rx.at('/ledger')) if (!firsts.includes(r.json.id as string)) firsts.push(r.json.id as string);
  assert.deepEqual(firsts, ids, 'publish order');
  // The probes carry their true attempt numbers, one more each time; the one answered was a probe.
  const head = rx.at('/ledger').filter((r) => r.json.id === ids[0]);
  assert.ok(head.length >= 3, `served by a probe after the two ladder attempts: ${head.length} attempts`);
  assert.deepEqual(
    head.map((r) => Number(r.headers['x-amebo-attempt'])),
    head.map((_, i) => i + 1),
  );
});

test('Redis away: ordered delivery goes on from the local fallback, not one per command timeout', async () => {
  await subscribe('steady', 'ops.ledger', { ordered: true });
  rx.on('/steady', () => ({ status: 200 }));
  const redis = record(bridgeOf(srv.amebo)!, 'redis');
  // Every command the bridge sends for an ordered event's progress while Redis is away would wait
  // for the command timeout (3 s) before the delivery goes on: count them.
  const cmd = (bridgeOf(srv.amebo) as unknown as { cmd: Redis }).cmd;
  const waited: string[] = [];
  const send = cmd.sendCommand.bind(cmd);
  cmd.sendCommand = (c: Command, ...rest: unknown[]) => {
    if (cmd.status !== 'ready' && String(c.args[0]).startsWith(`${env.cfg.redis.root}held:`))
      waited.push(`${c.name} ${String(c.args[0])}`);
    return (send as (...a: unknown[]) => unknown)(c, ...rest);
  };
  redisProxy.refuse(true);
  redisProxy.cut();
  try {
    // The cut has been noticed (the bridge's connections go through the same proxy).
    await eventually(() => srv.amebo.redis.status !== 'ready', 30_000);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await publish('ops.ledger', { steady: i }));
    await eventually(() => rx.at('/steady').length >= 10, 60_000);
    assert.deepEqual(
      rx.at('/steady').map((r) => r.json.id),
      ids,
      'each once, in publish order',
    );
    // Before, each ordered message waited for Redis's 3 s command timeout; now the bridge sees
    // Redis is away and keeps the ordered progress in this process at once.
    assert.deepEqual(waited, [], 'no delivery waited for a Redis command while Redis was away');
    assert.deepEqual(redis.seen, [{ available: false }], 'the bridge switched to its local fallback');
  } finally {
    cmd.sendCommand = send;
    redis.stop();
    redisProxy.refuse(false);
  }
});

test('a copy redelivered after its consumer died carries its true attempt number', async () => {
  await subscribe('slow', 'ops.slow', {});
  let first = true;
  // The first attempt hangs (its bridge dies holding the message); the redelivery is answered.
  rx.on('/slow', () => (first ? ((first = false), { status: 200, delayMs: 60_000 }) : { status: 200 }));
  const id = await publish('ops.slow', { x: 1 });
  await eventually(() => rx.at('/slow').length === 1, 30_000);
  await srv.close();
  srv = await bridge();
  await eventually(() => rx.at('/slow').length >= 2, 30_000);
  const again = rx.at('/slow')[1]!;
  assert.equal(again.json.id, id);
  assert.equal(again.headers['x-amebo-attempt'], '2');
});

test('ordered behind an open circuit, two bridges: the held event is not overtaken when the receiver comes back', async () => {
  // Two bridge processes share the ordered queue (single active consumer). The circuit opening must
  // not cancel the consumer holding the head event: the queue would hand the next one to the other.
  await srv.close();
  const breaker = { threshold: 3, windowMs: 10_000, cooldownMs: 500, maxCooldownMs: 1000 };
  srv = await bridge({ breaker });
  const second = await bridge({ breaker });
  try {
    await overtaking();
  } finally {
    await second.close();
  }
});

async function overtaking(): Promise<void> {
  await subscribe('queue-a', 'ops.slow', { ordered: true, retry_schedule: [1, 2], max_attempts: 1000 });
  await subscribe('queue-b', 'ops.slow', { retry_schedule: [1, 2], max_attempts: 1000 });
  let down = false;
  /** Requests to /queue-a refused while it is down (deliveries, then the breaker's probes). */
  let refused = 0;
  const first = new Map<string, number>();
  const order: number[] = [];
  rx.on('/queue-a', (r) => {
    if (down) return (refused++, { status: 503 });
    const n = (r.json as { payload: { k: number } }).payload.k;
    if (!first.has(r.json.id as string)) order.push(n);
    first.set(r.json.id as string, n);
    return { status: 200 };
  });
  rx.on('/queue-b', () => (down ? { status: 503 } : { status: 200 }));
  const ids: string[] = [];
  let k = 0;
  const pub = async (count: number) => {
    for (let i = 0; i < count; i++) {
      ids.push(await publish('ops.slow', { k: k++ }));
      await new Promise((r) => setTimeout(r, 20)); // the scenario: a steady trickle of events, not a burst
    }
  };
  await pub(20);
  down = true;
  await pub(60);
  // The circuit opens while the ordered consumer holds its head event...
  const open = env.cfg.redis.breaker('state', Breaker.id(rx.url('/queue-a')));
  await eventually(async () => (await srv.amebo.redis.exists(open)) === 1, 30_000);
  // ...and the receiver stays down a while longer (the scenario): until two probes, each after a
  // cool-down, have failed against it.
  const atOpen = refused;
  await eventually(() => refused >= atOpen + 2, 30_000);
  down = false;
  await pub(20);
  await eventually(() => order.length >= ids.length, 60_000);
  const late = order.filter((n, i) => i > 0 && n < order[i - 1]!);
  assert.deepEqual(late, [], `first deliveries out of order: ${JSON.stringify(order)}`);
}

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { destroy, eventually, http, REDIS_URL, start, testEnv, type Running } from '../helpers/harness.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { Receiver, seed } from './receiver.js';

// Real bridge processes: three side by side deliver each event once; kill -9 mid-delivery loses
// nothing; a RabbitMQ connection loss and a Redis disconnection are survived without a restart.
const run = promisify(execFile);
const env = testEnv();
let srv: Running; // api + relay only: every delivery here is made by a child process
const rx = new Receiver();
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);
let APP: [string, string];
const children = new Set<ChildProcess>();

function spawnBridge(opts: Record<string, unknown> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', new URL('./bridge-process.ts', import.meta.url).pathname], {
    env: {
      ...process.env,
      AMEBO_TEST_OVERRIDES: JSON.stringify(env.overrides),
      AMEBO_TEST_BRIDGE: JSON.stringify({ breaker: false, ...opts }),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('bridge process did not start in 30 s')), 30_000);
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('READY')) {
        clearTimeout(t);
        resolve(child);
      }
    });
    child.on('exit', (code) => reject(new Error(`bridge process exited ${code}`)));
  });
}

const stopChild = (c: ChildProcess): Promise<void> =>
  new Promise((r) => {
    if (c.exitCode !== null || c.signalCode !== null) return r();
    c.once('exit', () => r());
    c.kill('SIGTERM');
    setTimeout(() => c.kill('SIGKILL'), 8000).unref();
  });

before(async () => {
  await rx.listen();
  srv = await start(env, { plugins: [deliveryPlugin] }, { roles: 'api,relay' });
  APP = await seed(call, 'proc', ['p.three', 'p.kill', 'p.late', 'p.held', 'p.paced']);
});
after(async () => {
  await Promise.all([...children].map(stopChild));
  await srv?.close();
  await rx.close();
  await destroy(env);
});

async function subscribe(name: string, extra: Record<string, unknown> = {}) {
  const r = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'proc', subscription: name, action: `p.${name}`, handler: rx.url(`/${name}`), ...extra },
    'admin',
  );
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body as { id: string; queue: string };
}
const queueState = (q: string) => srv.amebo.broker.withThrowawayChannel((ch) => ch.checkQueue(q));
async function publishMany(action: string, n: number): Promise<string[]> {
  const r = await call(
    'POST',
    '/v1/events/batch',
    { events: Array.from({ length: n }, (_, i) => ({ action, payload: { i } })) },
    APP,
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.results.map((x: { event: string }) => x.event);
}
const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());

test('three bridge processes side by side deliver each event exactly once', async () => {
  const bridges = await Promise.all([spawnBridge(), spawnBridge(), spawnBridge()]);
  const s = await subscribe('three');
  await eventually(async () => (await queueState(s.queue)).consumerCount === 3, 30_000);
  const ids = await publishMany('p.three', 300);
  await eventually(() => new Set(rx.ids('/three')).size === 300, 30_000);
  // Every one recorded delivered, i.e. acked: none is left for the broker to hand out again.
  await eventually(async () => {
    const r = await srv.amebo.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM deliveries WHERE subscription = $1 AND state = 'delivered'`,
      [s.id],
    );
    return r.rows[0]!.n === 300;
  }, 30_000);
  const c = count(rx.ids('/three'));
  assert.equal(rx.at('/three').length, 300, 'no duplicates when receivers succeed');
  assert.deepEqual([...c.keys()].sort(), [...ids].sort());
  await Promise.all(bridges.map(stopChild));
});

test('kill -9 of a bridge mid-delivery loses nothing: its unacked messages are redelivered', async () => {
  const s = await subscribe('kill');
  rx.on('/kill', () => ({ delayMs: 150 }));
  const a = await spawnBridge({ prefetch: 5 });
  await eventually(async () => (await queueState(s.queue)).consumerCount === 1, 30_000);
  const ids = await publishMany('p.kill', 40);
  await eventually(() => rx.at('/kill').length >= 12, 30_000);
  a.kill('SIGKILL');
  const atKill = new Set(rx.ids('/kill'));
  await new Promise((r) => a.once('exit', r));
  await spawnBridge({ prefetch: 5 });
  await eventually(() => ids.every((id) => rx.ids('/kill').includes(id)), 30_000);
  await eventually(async () => (await queueState(s.queue)).messageCount === 0, 30_000);
  const dup = [...count(rx.ids('/kill'))].filter(([, n]) => n > 1).map(([id]) => id);
  assert.ok(dup.length >= 1 && dup.length <= 5, `only what the killed process held is sent again: ${dup.length}`);
  assert.ok(
    dup.every((id) => atKill.has(id)),
    'duplicates are events that were in flight at the kill',
  );
});

test('RabbitMQ connection loss and Redis disconnection: the bridge recovers by itself', async () => {
  const survivor = [...children].find((c) => c.exitCode === null)!;
  const pid = survivor.pid!;
  // Close only this process's AMQP connection (others' tests share the broker).
  const { stdout } = await run('rabbitmqctl', ['-q', 'list_connections', 'pid', 'client_properties'], {
    timeout: 20_000,
  });
  const line = stdout.split('\n').find((l) => l.includes(`amebo ${pid}"`) || l.includes(`amebo ${pid}>>`));
  assert.ok(line, `the bridge's connection is listed:\n${stdout.slice(0, 500)}`);
  const connPid = /<[^>]+>/.exec(line)![0];
  const before = rx.at('/kill').length;
  const ids = await publishMany('p.kill', 30);
  await eventually(() => rx.at('/kill').length >= before + 5, 30_000);
  await run('rabbitmqctl', ['-q', 'close_connection', connPid, 'test: connection loss'], { timeout: 20_000 });
  await eventually(() => ids.every((id) => rx.ids('/kill').includes(id)), 30_000);
  assert.equal(survivor.exitCode, null, 'the same process, not a restart');

  // Redis: kill the bridge's own connections (by client name), then change the registry meanwhile.
  const redis = new Redis(REDIS_URL);
  try {
    const list = (await redis.client('LIST')) as string;
    const mine = list.split('\n').filter((l) => / name=amebo-bridge-\d+/.test(l) && l.includes(`amebo-bridge-${pid}`));
    assert.equal(mine.length, 2, 'command and subscriber connections are named');
    for (const l of mine) await redis.client('KILL', 'ID', /id=(\d+)/.exec(l)![1]!);
    const s = await subscribe('late'); // announced while the bridge's subscriber may be away
    const late = await publishMany('p.late', 5);
    await eventually(() => late.every((id) => rx.ids('/late').includes(id)), 30_000);
    await eventually(async () => (await queueState(s.queue)).consumerCount === 1, 30_000);
    const again = (await redis.client('LIST')) as string;
    assert.ok(again.includes(`name=amebo-bridge-${pid}-sub`), 'the subscriber reconnected');
  } finally {
    redis.disconnect();
  }
  assert.equal(survivor.exitCode, null);
});

test('ordered: a held event keeps its attempt count when its bridge dies (kill -9)', async () => {
  const s = await subscribe('held', { ordered: true, retry_schedule: [1], max_attempts: 4 });
  rx.on('/held', () => ({ status: 500 }));
  const holder = [...children].find((c) => c.exitCode === null && c.signalCode === null)!;
  await eventually(async () => (await queueState(s.queue)).consumerCount >= 1, 30_000);
  const [id] = await publishMany('p.held', 1);
  await eventually(() => rx.at('/held').length >= 2, 30_000);
  holder.kill('SIGKILL');
  const atKill = rx.at('/held').length;
  await new Promise((r) => holder.once('exit', r));
  await spawnBridge();
  const dl = await eventually(async () => {
    const r = await call('GET', `/v1/subscriptions/${s.id}/dead-letters`, undefined, 'admin');
    return r.body.count === 1 ? r.body : null;
  }, 30_000);
  assert.equal(dl.items[0].event, id);
  assert.equal(dl.items[0].reason, 'max_attempts');
  const seen = rx.at('/held').map((r) => Number(r.headers['x-amebo-attempt']));
  assert.deepEqual([...new Set(seen)], [1, 2, 3, 4], `attempts carried on across the kill: ${seen.join(',')}`);
  assert.ok(seen.length <= 5, 'at most the attempt in flight at the kill is repeated');
  assert.ok(seen[atKill]! >= 2, `the new holder did not start over at attempt 1: ${seen.join(',')}`);
});

test('rate_limit holds across bridge processes (one pace in Redis, not one per process)', async () => {
  const bridges = await Promise.all([spawnBridge(), spawnBridge()]);
  const s = await subscribe('paced', { rate_limit: 5 });
  await eventually(async () => (await queueState(s.queue)).consumerCount >= 2, 30_000);
  await publishMany('p.paced', 10);
  await eventually(() => rx.at('/paced').length >= 10, 30_000);
  const at = rx.at('/paced').map((r) => r.at);
  // 10 deliveries at 5/s: 9 gaps of 200 ms. Paced per process, two processes would take about half.
  assert.ok(at[9]! - at[0]! >= 1500, `10 deliveries at 5/s over two processes took ${at[9]! - at[0]!} ms`);
  await Promise.all(bridges.map(stopChild));
});

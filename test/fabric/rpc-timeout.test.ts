/** Every call has a deadline: local timer, and a message expiration that brings queued calls back through rpc.dlx. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import { RpcTimeoutError } from '../../src/fabric/index.js';
import { AMQP_URL, open, sleep, timed, uniqueDomain } from './helpers.js';

const slowApi = {
  slow: async ({ ms }: { ms: number }) => {
    await sleep(ms);
    return ms;
  },
};

test('a call to a handler slower than its deadline fails at the deadline', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'svc', id: 's1', drainTimeoutMs: 2000 });
  await server.rpcRegister(slowApi);
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const p = await client.rpcProxy<typeof slowApi>(domain, 's1', 'svc', { timeoutMs: 400 });
  const r = await timed(p.slow({ ms: 1500 }));
  assert.ok(r.error instanceof RpcTimeoutError, String(r.error));
  assert.equal(r.error.reason, 'deadline');
  assert.equal(r.error.timeoutMs, 400);
  assert.ok(r.ms >= 400 && r.ms < 700, `failed after ${r.ms} ms`);
  // per-call override of the proxy's deadline
  const r2 = await timed(p.slow({ ms: 1500 }, { timeoutMs: 150 }));
  assert.ok(r2.error instanceof RpcTimeoutError);
  assert.ok(r2.ms >= 150 && r2.ms < 450, `failed after ${r2.ms} ms`);
  assert.equal(await p.slow({ ms: 10 }), 10);
});

test('a call still queued at its deadline expires in the queue and comes back through rpc.dlx', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'svc', id: 's1', drainTimeoutMs: 2000 });
  // One call at a time, as in amqp-fabric: the second call waits in the queue.
  await server.rpcRegister(slowApi, { concurrency: 1 });
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const p = await client.rpcProxy<typeof slowApi>(domain, 's1', 'svc', { timeoutMs: 3000 });
  const busy = p.slow({ ms: 1200 });
  await sleep(50);
  const r = await timed(p.slow({ ms: 1 }, { timeoutMs: 300 }));
  assert.ok(r.error instanceof RpcTimeoutError, String(r.error));
  assert.equal(r.error.reason, 'expired');
  assert.ok(r.ms >= 290 && r.ms < 600, `expired after ${r.ms} ms`);
  assert.equal(await busy, 1200);
});

test('a call the service rejects without replying fails at once as rejected', async (t) => {
  const domain = uniqueDomain();
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  // A scratch server that nacks every call, declared exactly as amqp-fabric does.
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const ch = await conn.createChannel();
  const ex = `${domain}.api.nacker.n1`;
  await ch.assertExchange(ex, 'direct', { durable: false, autoDelete: true });
  await ch.assertQueue(`${ex}::work`, {
    durable: false,
    autoDelete: true,
    arguments: { 'x-dead-letter-exchange': 'rpc.dlx' },
  });
  await ch.bindQueue(`${ex}::work`, ex, `${ex}::work`);
  await ch.consume(`${ex}::work`, (m) => m && ch.reject(m, false));
  const r = await timed(client.rpcCall({ domain, type: 'nacker', id: 'n1' }, 'work', {}, { timeoutMs: 5000 }));
  assert.ok(r.error instanceof RpcTimeoutError, String(r.error));
  assert.equal(r.error.reason, 'rejected');
  assert.ok(r.ms < 1000, `took ${r.ms} ms`);
});

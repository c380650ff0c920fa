/** Every call has a deadline: local timer, and a message expiration that brings queued calls back through rpc.dlx. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import { RpcTimeoutError } from '../../src/fabric/index.js';
import type { TestContext } from 'node:test';
import { AMQP_URL, open, timed, uniqueDomain, waitFor } from './helpers.js';

/** A handler that holds every call until the test lets it go (`release`), and one that answers at once. */
function heldApi(t: TestContext) {
  let held = 0;
  let finished = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  t.after(() => release());
  const api = {
    slow: async ({ ms }: { ms: number }) => {
      held++;
      await gate;
      finished++;
      return ms;
    },
    quick: async ({ ms }: { ms: number }) => ms,
  };
  return { api, release: () => release(), held: () => held, finished: () => finished };
}

test('a call to a handler slower than its deadline fails at the deadline', async (t) => {
  const domain = uniqueDomain();
  const h = heldApi(t);
  const server = await open(t, { domain, type: 'svc', id: 's1', drainTimeoutMs: 2000 });
  await server.rpcRegister(h.api);
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const p = await client.rpcProxy<typeof h.api>(domain, 's1', 'svc', { timeoutMs: 400 });
  // The handler never answers before the test lets it: a failure while it holds is the deadline's.
  const r = await timed(p.slow({ ms: 1500 }));
  assert.ok(r.error instanceof RpcTimeoutError, String(r.error));
  assert.equal(r.error.reason, 'deadline');
  assert.equal(r.error.timeoutMs, 400);
  assert.ok(r.ms >= 400, `not before the deadline: failed after ${r.ms} ms`);
  // per-call override of the proxy's deadline
  const r2 = await timed(p.slow({ ms: 1500 }, { timeoutMs: 150 }));
  assert.ok(r2.error instanceof RpcTimeoutError);
  assert.equal(r2.error.timeoutMs, 150);
  assert.ok(r2.ms >= 150, `failed after ${r2.ms} ms`);
  assert.equal(h.finished(), 0, 'both failed while their handler still held them');
  h.release();
  assert.equal(await p.quick({ ms: 10 }), 10);
});

test('a call still queued at its deadline expires in the queue and comes back through rpc.dlx', async (t) => {
  const domain = uniqueDomain();
  const h = heldApi(t);
  const server = await open(t, { domain, type: 'svc', id: 's1', drainTimeoutMs: 2000 });
  // One call at a time, as in amqp-fabric: the second call waits in the queue.
  await server.rpcRegister(h.api, { concurrency: 1 });
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const p = await client.rpcProxy<typeof h.api>(domain, 's1', 'svc', { timeoutMs: 30_000 });
  const busy = p.slow({ ms: 1200 });
  await waitFor(() => h.held() === 1, 30_000, 'the first call being served');
  const r = await timed(p.quick({ ms: 1 }, { timeoutMs: 300 }));
  assert.ok(r.error instanceof RpcTimeoutError, String(r.error));
  assert.equal(r.error.reason, 'expired', 'it came back from the queue through rpc.dlx');
  assert.ok(r.ms >= 290, `expired after ${r.ms} ms`);
  h.release();
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
  // 'rejected', not 'deadline': it failed when the service refused it, not at its 5 s deadline.
  assert.equal(r.error.reason, 'rejected');
});

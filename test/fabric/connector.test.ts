/** The connector's life cycle: bounded open, close that drains, nothing usable after close. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FabricConnector, FabricUnavailableError } from '../../src/fabric/index.js';
import { open, sleep, timed, uniqueDomain } from './helpers.js';

test('open() gives up after its timeout when the broker is unreachable', async () => {
  const c = new FabricConnector({
    amqpUrl: 'amqp://guest:guest@127.0.0.1:1',
    domain: uniqueDomain(),
    type: 'svc',
    id: 'x',
  });
  const r = await timed(c.open({ timeoutMs: 400 }));
  assert.ok(r.error instanceof FabricUnavailableError, String(r.error));
  // Date.now() granularity and the synchronous start before `timed` sees the promise: a few ms.
  assert.ok(r.ms >= 390 && r.ms < 1500, `gave up after ${r.ms} ms`);
  await assert.rejects(c.rpcRegister({}), FabricUnavailableError);
  await c.close();
});

test('close() drains: calls being served and calls being made finish first; then nothing is accepted', async (t) => {
  const domain = uniqueDomain();
  let started = 0;
  const server = await open(t, { domain, type: 'svc', id: 's1', keepAliveMs: 0 });
  await server.rpcRegister({
    slow: async ({ ms }: { ms: number }) => {
      started++;
      await sleep(ms);
      return ms;
    },
  });
  const client = await open(t, { domain, type: 'cli', id: 'c1', keepAliveMs: 0 });
  const p = await client.rpcProxy<{ slow(a: { ms: number }): number }>(domain, 's1', 'svc', { timeoutMs: 5000 });

  const inflight = [p.slow({ ms: 400 }), p.slow({ ms: 300 })];
  while (started < 2) await sleep(10);
  const closing = timed(server.close());
  assert.deepEqual(await Promise.all(inflight), [400, 300], 'served calls complete during close');
  const closed = await closing;
  assert.ok(closed.ms >= 250, `server close returned after ${closed.ms} ms, before its calls finished`);
  await assert.rejects(server.rpcRegister({}), FabricUnavailableError);
  await assert.rejects(server.publishData('x'), FabricUnavailableError);

  // The caller's side: a call in flight when close() starts still gets its answer.
  const other = await open(t, { domain, type: 'svc', id: 's2', keepAliveMs: 0 });
  await other.rpcRegister({ slow: async ({ ms }: { ms: number }) => (await sleep(ms), ms) });
  const q = await client.rpcProxy<{ slow(a: { ms: number }): number }>(domain, 's2', 'svc', { timeoutMs: 5000 });
  const call = q.slow({ ms: 300 });
  await sleep(50);
  await client.close();
  assert.equal(await call, 300);
  await assert.rejects(q.slow({ ms: 1 }), FabricUnavailableError);
});

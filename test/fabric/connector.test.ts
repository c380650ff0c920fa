/** The connector's life cycle: bounded open, close that drains, nothing usable after close. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FabricConnector, FabricUnavailableError } from '../../src/fabric/index.js';
import { open, sleep, timed, uniqueDomain, waitFor, within } from './helpers.js';

test('open() gives up after its timeout when the broker is unreachable', async () => {
  const c = new FabricConnector({
    amqpUrl: 'amqp://guest:guest@127.0.0.1:1',
    domain: uniqueDomain(),
    type: 'svc',
    id: 'x',
  });
  const r = await timed(within(c.open({ timeoutMs: 400 }), 30_000, 'open() giving up'));
  assert.ok(r.error instanceof FabricUnavailableError, String(r.error));
  // Not before its timeout (Date.now() granularity and the synchronous start: a few ms early at most).
  assert.ok(r.ms >= 390, `gave up after ${r.ms} ms`);
  await assert.rejects(c.rpcRegister({}), FabricUnavailableError);
  await c.close();
});

test('close() drains: calls being served and calls being made finish first; then nothing is accepted', async (t) => {
  const domain = uniqueDomain();
  let started = 0;
  let finished = 0;
  const server = await open(t, { domain, type: 'svc', id: 's1', keepAliveMs: 0 });
  await server.rpcRegister({
    slow: async ({ ms }: { ms: number }) => {
      started++;
      await sleep(ms); // the scenario: calls still being served when close() starts
      finished++;
      return ms;
    },
  });
  const client = await open(t, { domain, type: 'cli', id: 'c1', keepAliveMs: 0 });
  const p = await client.rpcProxy<{ slow(a: { ms: number }): number }>(domain, 's1', 'svc', { timeoutMs: 5000 });

  const inflight = [p.slow({ ms: 400 }), p.slow({ ms: 300 })];
  await waitFor(() => started === 2, 30_000, 'both calls being served');
  let finishedAtClose = -1;
  const closing = server.close().then(() => (finishedAtClose = finished));
  assert.deepEqual(await Promise.all(inflight), [400, 300], 'served calls complete during close');
  await closing;
  assert.equal(finishedAtClose, 2, 'server close returned only after its calls finished');
  await assert.rejects(server.rpcRegister({}), FabricUnavailableError);
  await assert.rejects(server.publishData('x'), FabricUnavailableError);

  // The caller's side: a call in flight when close() starts still gets its answer.
  const other = await open(t, { domain, type: 'svc', id: 's2', keepAliveMs: 0 });
  let served = 0;
  await other.rpcRegister({ slow: async ({ ms }: { ms: number }) => (served++, await sleep(ms), ms) });
  const q = await client.rpcProxy<{ slow(a: { ms: number }): number }>(domain, 's2', 'svc', { timeoutMs: 5000 });
  const call = q.slow({ ms: 300 });
  await waitFor(() => served === 1, 30_000, 'the call being served'); // in flight when close() starts
  await client.close();
  assert.equal(await call, 300);
  await assert.rejects(q.slow({ ms: 1 }), FabricUnavailableError);
});

/** One instance runs several calls at once (amqp-fabric runs one per method), bounded by `concurrency`. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { open, sleep, timed, uniqueDomain } from './helpers.js';

const SLOW_MS = 300;

test('N slow calls on one instance run at once; concurrency bounds it', async (t) => {
  const domain = uniqueDomain();
  let running = 0;
  let peak = 0;
  // Each call holds until `want` calls run at once (so they overlap however loaded the machine),
  // then takes SLOW_MS more (the scenario: a call a bound too loose would overlap with).
  let want = 1;
  let waiting: (() => void)[] = [];
  const api = {
    slow: async () => {
      peak = Math.max(peak, ++running);
      if (running >= want) for (const go of waiting.splice(0)) go();
      else await new Promise<void>((r) => waiting.push(r));
      await sleep(SLOW_MS);
      running--;
      return true;
    },
  };
  t.after(() => {
    for (const go of waiting) go();
    waiting = [];
  });
  const server = await open(t, { domain, type: 'svc', id: 'wide' });
  await server.rpcRegister(api); // default concurrency 16
  const narrow = await open(t, { domain, type: 'svc', id: 'narrow' });
  await narrow.rpcRegister(api, { concurrency: 2 });
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });

  const wide = await client.rpcProxy<typeof api>(domain, 'wide', 'svc', { timeoutMs: 30_000 });
  await wide.health_check();
  want = 10;
  const r = await timed(Promise.all(Array.from({ length: 10 }, () => wide.slow())));
  assert.deepEqual(r.value, Array(10).fill(true), String(r.error));
  assert.equal(peak, 10, 'ten calls at once on one instance');

  peak = 0;
  want = 2;
  const two = await client.rpcProxy<typeof api>(domain, 'narrow', 'svc', { timeoutMs: 30_000 });
  const r2 = await timed(Promise.all(Array.from({ length: 4 }, () => two.slow())));
  assert.equal(peak, 2);
  assert.ok(r2.ms >= 2 * SLOW_MS - 20, `4 calls at concurrency 2 took only ${r2.ms} ms`);

  // The bound is per instance, across methods.
  peak = 0;
  const both = await open(t, { domain, type: 'svc', id: 'both' });
  await both.rpcRegister({ a: api.slow, b: api.slow }, { concurrency: 2 });
  const ab = await client.rpcProxy<{ a(): boolean; b(): boolean }>(domain, 'both', 'svc', { timeoutMs: 30_000 });
  const r3 = await timed(Promise.all([ab.a(), ab.b(), ab.a(), ab.b()]));
  assert.deepEqual(r3.value, [true, true, true, true]);
  assert.equal(peak, 2);
  assert.ok(r3.ms >= 2 * SLOW_MS - 20, `4 calls over two methods at concurrency 2 took only ${r3.ms} ms`);
});

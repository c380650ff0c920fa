import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Breaker } from '../../bridge/breaker.js';
import { bridgeOptions } from '../../bridge/index.js';
import { loadConfig } from '../../src/config.js';
import { RedisNames } from '../../src/redis-names.js';
import { hex, REDIS_URL } from '../helpers/harness.js';

// Issue "Production on a RabbitMQ cluster": the breaker's cool-down doubled to 160 s (its cap was
// 300 s), so after a 3-minute receiver outage the bulk subscription resumed 130 s after the
// receiver was back. The cool-down is capped (AMEBO_BREAKER_MAX_COOLDOWN_MS, 12 s by default)
// and serve passes the cap to the bridge.
const names = new RedisNames(`amebo_t_${hex()}`);
const redis = new Redis(REDIS_URL, { lazyConnect: true });
before(() => redis.connect());
after(async () => {
  const keys = await redis.keys(`${names.root}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

const endpoint = (): string => `http://127.0.0.1:1/hook-${hex()}`;

test('the default cap is 12 s, from the configuration to the bridge', () => {
  const cfg = loadConfig({}, {});
  assert.equal(cfg.breakerMaxCooldownMs, 12_000);
  const opts = bridgeOptions(cfg).breaker;
  assert.ok(opts, 'breaker on by default');
  assert.equal(opts.maxCooldownMs, 12_000, 'serve hands the cap to the bridge');
  assert.equal(new Breaker(redis, names, pino({ level: 'silent' })).maxCooldownMs, 12_000, 'the breaker default');
  assert.equal(
    loadConfig({}, { AMEBO_BREAKER_MAX_COOLDOWN_MS: '5000' }).breakerMaxCooldownMs,
    5000,
    'AMEBO_BREAKER_MAX_COOLDOWN_MS sets it',
  );
});

test('failed probes double the cool-down up to the cap, never beyond', async () => {
  const b = new Breaker(redis, names, pino({ level: 'silent' }));
  const ep = endpoint();
  let st = await b.open(ep, b.cooldownMs);
  assert.equal(st?.cooldownMs, 10_000);
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    st = await b.reopen(ep, st);
    seen.push(st!.cooldownMs);
  }
  assert.deepEqual(seen, [12_000, 12_000, 12_000, 12_000, 12_000]);
  assert.ok(st!.until - Date.now() <= 12_000, 'the next probe is due within the cap');
  // A state an older process left with a long cool-down is brought back under the cap too.
  const old = await b.reopen(ep, { until: Date.now() + 160_000, cooldownMs: 160_000 });
  assert.equal(old?.cooldownMs, 12_000);
});

test('a configured cap holds', async () => {
  const b = new Breaker(redis, names, pino({ level: 'silent' }), { cooldownMs: 500, maxCooldownMs: 1500 });
  const ep = endpoint();
  let st = await b.open(ep, b.cooldownMs);
  const seen: number[] = [];
  for (let i = 0; i < 4; i++) {
    st = await b.reopen(ep, st);
    seen.push(st!.cooldownMs);
  }
  assert.deepEqual(seen, [1000, 1500, 1500, 1500]);
});

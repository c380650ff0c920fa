/** Amebo's presence role on a real Redis: the fleet up → down, shared by two Amebo processes, and GET /v1/services. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { Presence, servicesRoutes, type ServiceItem } from '../../src/fabric/presence.js';
import type { ServiceChange } from '../../src/fabric/index.js';
import { AMQP_URL, hex, open, REDIS_URL, uniqueDomain, waitFor } from './helpers.js';

test('presence lists services up, then down (remembered), agrees across processes, and serves GET /v1/services', async (t) => {
  const domain = uniqueDomain();
  const redisPrefix = `fabrictest:${hex()}:`;
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  t.after(async () => {
    const keys = await redis.keys(`${redisPrefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });
  const mk = (): Presence => new Presence({ amqpUrl: AMQP_URL, redis, redisPrefix, ttlSeconds: 3 });
  const presence = mk();
  await presence.start();
  t.after(() => presence.stop());
  const changes: ServiceChange[] = [];
  presence.on('change', (c) => c.domain === domain && changes.push(c));

  const svc = await open(t, { domain, type: 'encoder', id: 'e1', version: '2.0.1', keepAliveMs: 200 });
  await open(t, { domain: `${domain}x`, type: 'encoder', id: 'other', keepAliveMs: 200 });
  const up = await waitFor(async () => (await presence.list({ domain }))[0], 30_000, 'service listed');
  const item: ServiceItem = up;
  assert.deepEqual(
    { ...item, last_seen: typeof item.last_seen, started_at: typeof item.started_at, host: typeof item.host },
    {
      domain,
      type: 'encoder',
      id: 'e1',
      fqn: `${domain}.encoder.e1`,
      status: 'up',
      instances: 1,
      version: '2.0.1',
      host: 'string',
      started_at: 'string',
      last_seen: 'string',
    },
  );
  assert.equal(Date.parse(item.started_at!), svc.startedAt.getTime());
  assert.deepEqual(await presence.list({ domain, type: 'enc' }), [], 'type matches exactly');

  // A second Amebo process sharing the Redis prefix answers the same.
  const second = mk();
  await second.start();
  t.after(() => second.stop());
  assert.deepEqual(
    (await second.list({ domain })).map((s) => [s.fqn, s.status]),
    [[`${domain}.encoder.e1`, 'up']],
  );

  // HTTP
  const app = Fastify();
  await app.register(servicesRoutes, { presence: second });
  t.after(() => app.close());
  const res = await app.inject({ method: 'GET', url: `/v1/services?domain=${domain}` });
  assert.equal(res.statusCode, 200);
  const body = res.json<{ items: ServiceItem[] }>();
  assert.deepEqual(
    body.items.map((s) => [s.id, s.status, s.version]),
    [['e1', 'up', '2.0.1']],
  );

  // Down: the service goes away; it stays listed as down.
  await svc.close();
  const down = await waitFor(
    async () => (await presence.list({ domain })).find((x) => x.status === 'down'),
    3000,
    'down',
  );
  assert.equal(down.instances, 0);
  assert.equal((await second.list({ domain }))[0]?.status, 'down');
  await waitFor(() => changes.some((c) => c.status === 'down'), 30_000, 'a down change event');
  assert.deepEqual(
    changes.map((c) => [c.type, c.fqn, c.status]),
    [
      ['service', `${domain}.encoder.e1`, 'up'],
      ['service', `${domain}.encoder.e1`, 'down'],
    ],
  );
});

test('a service that goes silent (killed, no goodbye) is stale, then down after the TTL', async (t) => {
  const domain = uniqueDomain();
  const redisPrefix = `fabrictest:${hex()}:`;
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  t.after(async () => {
    const keys = await redis.keys(`${redisPrefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });
  const presence = new Presence({ amqpUrl: AMQP_URL, redis, redisPrefix, ttlSeconds: 0.9 });
  await presence.start();
  t.after(() => presence.stop());
  const seen: string[] = [];
  presence.on('change', (c) => c.domain === domain && seen.push(c.status));
  // keep-alives every 100 ms, then silence: closing the link without the goodbye a close() sends
  const svc = await open(t, { domain, type: 'py', id: 'p1', keepAliveMs: 100 });
  await waitFor(async () => (await presence.list({ domain }))[0]?.status === 'up', 30_000, 'up');
  await (svc as unknown as { link: { close(): Promise<void> } }).link.close();
  await waitFor(() => seen.length >= 3, 30_000, 'stale and down');
  assert.deepEqual(seen, ['up', 'stale', 'down']);
  assert.equal((await presence.list({ domain }))[0]?.status, 'down');
});

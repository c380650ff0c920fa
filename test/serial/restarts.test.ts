/**
 * Real restarts of the shared RabbitMQ and Redis while Amebo publishes and delivers. These stop
 * services every other suite uses, so `npm test` runs this directory on its own, after the rest.
 * Nothing answered 2xx is lost, Amebo is never restarted, and the fabric comes back by itself.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeStarter } from '../../bridge/index.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { FabricConnector } from '../../src/fabric/index.js';
import { Receiver, seed } from '../bridge/receiver.js';
import { AMQP_URL, deleteDomainExchanges, uniqueDomain } from '../fabric/helpers.js';

const run = promisify(execFile);
const env = testEnv({ relayIntervalMs: 200 });
const rx = new Receiver();
let srv: Running;
let APP: [string, string];
const domain = uniqueDomain();
const connectors: FabricConnector[] = [];
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

before(async () => {
  await rx.listen();
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] });
  APP = await seed(call, 'rs', ['rs.tick']);
  await subscribe('hook');
});

async function subscribe(name: string): Promise<void> {
  const r = await call(
    'POST',
    '/v1/subscriptions',
    { application: 'rs', subscription: name, action: 'rs.tick', handler: rx.url(`/${name}`) },
    'admin',
  );
  assert.equal(r.status, 201, JSON.stringify(r.body));
}
after(async () => {
  await Promise.all(connectors.map((c) => c.close()));
  await srv?.close();
  await rx.close();
  await destroy(env);
  await deleteDomainExchanges([domain]).catch(() => undefined);
});

/** Publishes every 25 ms until stopped; keeps the ids answered 2xx and counts the rest. */
function publishing(action: string) {
  const accepted: string[] = [];
  const refused: number[] = [];
  let stop = false;
  const done = (async () => {
    for (let n = 0; !stop; n++) {
      const r = await call('POST', '/v1/events', { action, payload: { n } }, APP).catch(() => null);
      if (r && r.status >= 200 && r.status < 300) accepted.push(r.body.event);
      else refused.push(r?.status ?? 0);
      await new Promise((res) => setTimeout(res, 25)); // the load's pace (the scenario)
    }
  })();
  return {
    accepted,
    refused,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

const delivered = (ids: string[]) => {
  const got = new Set(rx.ids('/hook'));
  return ids.filter((id) => !got.has(id));
};

test('RabbitMQ restarts under load: every 2xx event is delivered, Amebo and fabric services recover by themselves', async () => {
  const service = new FabricConnector({ amqpUrl: AMQP_URL, domain, type: 'svc', id: 's1' });
  const client = new FabricConnector({ amqpUrl: AMQP_URL, domain, type: 'cli', id: 'c1' });
  connectors.push(service, client);
  await service.open({ timeoutMs: 10_000 });
  await client.open({ timeoutMs: 10_000 });
  await service.rpcRegister({ ping: ({ n }: { n: number }) => n + 1 });
  const proxy = await client.rpcProxy<{ ping(a: { n: number }): number }>(domain, 's1', 'svc', { timeoutMs: 2000 });
  assert.equal(await proxy.ping({ n: 1 }), 2);

  const load = publishing('rs.tick');
  await eventually(() => rx.at('/hook').length >= 5, 15_000);
  await run('rabbitmqctl', ['-q', 'stop_app'], { timeout: 120_000 });
  const duringOutage = load.accepted.length;
  await new Promise((r) => setTimeout(r, 2000)); // the scenario: publishing goes on while RabbitMQ is down
  const acceptedWhileDown = load.accepted.length - duringOutage;
  await run('rabbitmqctl', ['-q', 'start_app'], { timeout: 180_000 });
  await run('rabbitmqctl', ['-q', 'await_startup'], { timeout: 180_000 }).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 2000)); // the scenario: and goes on while everything recovers
  await load.stop();

  // PostgreSQL took the events while the broker was away: the outbox relay publishes them later.
  assert.ok(acceptedWhileDown > 0, `events were accepted while RabbitMQ was down (refused: ${load.refused.join(',')})`);
  await eventually(() => delivered(load.accepted).length === 0, 90_000, 200).catch(() => {
    throw new Error(`${delivered(load.accepted).length} of ${load.accepted.length} accepted events never delivered`);
  });
  await eventually(async () => (await call('GET', '/ready')).status === 200, 30_000, 200);
  // The fabric's connections recovered too: the same objects call each other again.
  const n = await eventually(() => proxy.ping({ n: 41 }).catch(() => 0), 30_000, 250);
  assert.equal(n, 42);
});

test('Redis restarts (its data gone) under load: deliveries go on and registry changes still propagate', async () => {
  const load = publishing('rs.tick');
  await eventually(() => load.accepted.length >= 5, 15_000);
  await run('redis-cli', ['-h', '127.0.0.1', 'shutdown', 'nosave'], { timeout: 20_000 }).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 1500)); // the scenario: Redis stays down a while under load
  await run('bash', ['scripts/services.sh'], { timeout: 120_000, env: { ...process.env, AMEBO_SKIP_SERVICES: '' } });
  await new Promise((r) => setTimeout(r, 1500)); // the scenario: load goes on after it is back
  await load.stop();
  await eventually(() => delivered(load.accepted).length === 0, 60_000, 200).catch(() => {
    throw new Error(`${delivered(load.accepted).length} of ${load.accepted.length} accepted events never delivered`);
  });
  // A subscription created after the restart is found and delivered to.
  await subscribe('late');
  const e = await eventually(async () => {
    const x = await call('POST', '/v1/events', { action: 'rs.tick', payload: { late: true } }, APP);
    return x.status === 202 ? (x.body.event as string) : null;
  }, 15_000);
  await eventually(() => rx.ids('/late').includes(e!), 20_000);
  await eventually(async () => (await call('GET', '/ready')).status === 200, 30_000, 200);
});

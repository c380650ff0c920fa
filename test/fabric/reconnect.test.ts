/**
 * Recovery: the broker force-closes a connector's connection (by name, so other people's
 * connections on the shared broker are left alone); channels, consumers, prefetch and declarations
 * come back, so RPC both ways, data subscriptions and keep-alives work again.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import { AMQP_URL, closeConnectionsNamed, hex, nextEvent, open, uniqueDomain, waitFor } from './helpers.js';

test('after a forced close of the service and then of the caller connection, everything works again', async (t) => {
  const domain = uniqueDomain();
  const serverName = `fabric-test-srv-${hex()}`;
  const clientName = `fabric-test-cli-${hex()}`;
  const server = await open(t, {
    domain,
    type: 'svc',
    id: 's1',
    keepAliveMs: 200,
    connectionName: serverName,
    reconnectInitialDelayMs: 50,
  });
  await server.rpcRegister({ add: ({ a, b }: { a: number; b: number }) => a + b }, { concurrency: 4 });
  const received: string[] = [];
  await server.subscribeData(`${domain}-inbox`, { kind: 'note' }, (m) => void received.push(m.text()));
  const client = await open(t, {
    domain,
    type: 'cli',
    id: 'c1',
    keepAliveMs: 0,
    connectionName: clientName,
    reconnectInitialDelayMs: 50,
    serviceTtlMs: 900,
  });
  const p = await client.rpcProxy<{ add(a: { a: number; b: number }): number }>(domain, 's1', 'svc', {
    timeoutMs: 2000,
  });
  assert.equal(await p.add({ a: 1, b: 2 }), 3);
  await client.watchServices(() => undefined);

  // 1. the service's connection
  const down = nextEvent(server, 'disconnect', 15_000);
  const back = nextEvent(server, 'connect', 15_000);
  assert.equal(await closeConnectionsNamed(serverName), 1);
  await down;
  await back;
  // The method queues are auto-delete: they went with the connection and were redeclared by setup.
  const sum = await waitFor(
    () => p.add({ a: 2, b: 3 }).catch(() => undefined),
    5000,
    'a call answered after the reconnect',
  );
  assert.equal(sum, 5);
  await client.publishData('after service reconnect', { kind: 'note' });
  await waitFor(() => received.includes('after service reconnect'), 30_000, 'data after reconnect');
  const listed = await waitFor(
    async () => (await client.listServices({ domain, type: 'svc' }))[0]?.status === 'up',
    3000,
    'keep-alives',
  );
  assert.ok(listed);

  // 2. the caller's connection: its exclusive reply queue went with it and must be back
  const cdown = nextEvent(client, 'disconnect', 15_000);
  const cback = nextEvent(client, 'connect', 15_000);
  assert.equal(await closeConnectionsNamed(clientName), 1);
  await cdown;
  await cback;
  assert.equal(await p.add({ a: 20, b: 22 }), 42);
  await client.publishData('after client reconnect', { kind: 'note' });
  await waitFor(() => received.includes('after client reconnect'), 30_000, 'data after client reconnect');
});

test('a method queue deleted under a live service is declared and consumed again, on the same connection', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'svc', id: 's1', keepAliveMs: 0 });
  await server.rpcRegister({ add: ({ a, b }: { a: number; b: number }) => a + b });
  const client = await open(t, { domain, type: 'cli', id: 'c1', keepAliveMs: 0 });
  const p = await client.rpcProxy<{ add(a: { a: number; b: number }): number }>(domain, 's1', 'svc', {
    timeoutMs: 1000,
  });
  assert.equal(await p.add({ a: 1, b: 2 }), 3);
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    const q = `${domain}.api.svc.s1::add`;
    assert.equal((await ch.checkQueue(q)).consumerCount, 1);
    await ch.deleteQueue(q); // the broker cancels the service's consumer
  } finally {
    await conn.close();
  }
  const sum = await waitFor(() => p.add({ a: 20, b: 22 }).catch(() => 0), 30_000, 'the method answers again');
  assert.equal(sum, 42);
});

/**
 * The SDK's `FabricConnector` takes the nodes of a cluster in `amqpUrl` (issue "Production on a
 * RabbitMQ cluster" §2): when its node goes away it moves to another at once and rebuilds its
 * channels there (RPC replies, data publisher and subscription); while no node answers it reports
 * each failed attempt with the node it tried. Two proxies in front of the shared broker stand for
 * two nodes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { FabricConnector, type DataMessage, type ReconnectAttempt } from '../../src/fabric/index.js';
import { TcpProxy } from '../helpers/proxy.js';
import { open, uniqueDomain, waitFor } from './helpers.js';

const untilEvent = (c: FabricConnector, event: 'ready'): Promise<void> =>
  // Not events.once: it would reject on the `error` of a failed attempt meanwhile.
  new Promise((resolve) => c.once(event, () => resolve()));

test('amqpUrl lists two nodes: the connector moves to the other when its node goes, and back', async (t) => {
  const node1 = new TcpProxy(5672);
  const node2 = new TcpProxy(5672);
  const [p1, p2] = [await node1.listen(), await node2.listen()];
  t.after(async () => {
    await node1.close();
    await node2.close();
  });
  const domain = uniqueDomain();
  const svc = await open(t, { domain, type: 'calc', id: 'c1', keepAliveMs: 0 });
  await svc.rpcRegister({ multiply: ({ x, y }: { x: number; y: number }) => x * y });
  const got: DataMessage[] = [];
  const publisher = await open(t, { domain, type: 'shop', id: 's1', keepAliveMs: 0 });

  const client = new FabricConnector({
    amqpUrl: `amqp://guest:guest@127.0.0.1:${p1}, amqp://guest:guest@127.0.0.1:${p2}`,
    domain,
    type: 'app',
    id: 'a1',
    keepAliveMs: 0,
    logger: pino({ level: 'silent' }),
  });
  t.after(() => client.close());
  await client.open({ timeoutMs: 10_000 });
  const n1 = `amqp://guest:***@127.0.0.1:${p1}?heartbeat=10`;
  const n2 = `amqp://guest:***@127.0.0.1:${p2}?heartbeat=10`;
  assert.equal(client.node, n1);
  const calc = await client.rpcProxy<{ multiply(a: { x: number; y: number }): number }>(domain, 'c1', 'calc', {
    timeoutMs: 10_000,
  });
  assert.equal(await calc.multiply({ x: 5, y: 7 }), 35);
  await client.subscribeData(`${domain}-audit`, { msg_type: 'T' }, (m) => void got.push(m));

  // Node 1 goes away for good: the next attempt goes to node 2, at once (no failed attempt first).
  const attempts: ReconnectAttempt[] = [];
  client.on('reconnecting', (a) => void attempts.push(a));
  const errors: Error[] = [];
  client.on('error', (e) => void errors.push(e));
  let moved = untilEvent(client, 'ready');
  node1.refuse(true);
  node1.cut();
  await moved;
  assert.equal(client.node, n2, 'on the other node');
  assert.equal(attempts.length, 0, 'no failed attempt before the other node');
  // Everything was rebuilt there: the reply queue, the data subscription and the data publisher.
  assert.equal(await calc.multiply({ x: 6, y: 7 }), 42);
  await publisher.publishData('after the move', { msg_type: 'T' });
  await client.publishData('from the client', { msg_type: 'T' });
  await waitFor(() => got.length >= 2, 30_000, 'data after the move');
  assert.deepEqual(got.map((m) => m.text()).sort(), ['after the move', 'from the client']);

  // Now both are away: each failed attempt names the node it tried, alternating.
  node2.refuse(true);
  node2.cut();
  await waitFor(() => attempts.length >= 4, 30_000, 'four failed attempts');
  assert.equal(client.connected, false);
  assert.deepEqual(new Set(attempts.map((a) => a.node)), new Set([n1, n2]));
  assert.ok(errors.length >= 4, 'each failure is an error event too (someone listens)');
  moved = untilEvent(client, 'ready');
  node1.refuse(false);
  await moved;
  assert.equal(client.node, n1, 'back on the node that came back');
  assert.equal(await calc.multiply({ x: 2, y: 21 }), 42);
});

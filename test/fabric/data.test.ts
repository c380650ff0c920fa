/** Data streams on {domain}.data: header filters, same-name load balancing, different-name fan-out. */
// Subscriber queue names are global to the vhost (amqp-fabric names them exactly as given): prefixed here to isolate tests.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DataMessage } from '../../src/fabric/index.js';
import amqp from 'amqplib';
import { AMQP_URL, open, uniqueDomain, waitFor } from './helpers.js';

test('subscribers get only messages whose headers match all of theirs; publisher identity is added', async (t) => {
  const domain = uniqueDomain();
  const pub = await open(t, { domain, type: 'shop', id: 'till1', keepAliveMs: 0 });
  const sub = await open(t, { domain, type: 'books', id: 'acc1', keepAliveMs: 0 });
  const usd: DataMessage[] = [];
  const all: DataMessage[] = [];
  await sub.subscribeData(
    `${domain}-accountant-usd`,
    { msg_type: 'CUSTOMER_TRANSACTIONS', currency: 'USD' },
    (m) => void usd.push(m),
  );
  await sub.subscribeData(`${domain}-auditor`, { msg_type: 'CUSTOMER_TRANSACTIONS' }, (m) => void all.push(m));

  await pub.publishData(
    { products: ['book'], msg: 'Checkout committed', order_total: 55 },
    { msg_type: 'CUSTOMER_TRANSACTIONS', currency: 'USD' },
  );
  await pub.publishData({ order_total: 10 }, { msg_type: 'CUSTOMER_TRANSACTIONS', currency: 'EUR' });
  await pub.publishData('not a transaction', { msg_type: 'OTHER', currency: 'USD' });
  await waitFor(() => usd.length >= 1 && all.length >= 2, 30_000, 'deliveries');
  // Nothing else trickles in: a later message matching both reaches both, after exactly these.
  await pub.publishData('marker', { msg_type: 'CUSTOMER_TRANSACTIONS', currency: 'USD' });
  await waitFor(
    () => !!usd.at(-1)?.text().includes('marker') && !!all.at(-1)?.text().includes('marker'),
    30_000,
    'the marker',
  );
  usd.pop();
  all.pop();

  assert.equal(usd.length, 1);
  assert.equal(all.length, 2);
  const m = usd[0]!;
  // amqp-fabric's convention: json.dumps(obj, sort_keys=True)
  assert.equal(m.text(), '{"msg":"Checkout committed","order_total":55,"products":["book"]}');
  assert.deepEqual(m.json(), { msg: 'Checkout committed', order_total: 55, products: ['book'] });
  assert.equal(m.headers.service_id, 'till1');
  assert.equal(m.headers.service_type, 'shop');
  assert.equal(m.headers.currency, 'USD');
  assert.deepEqual(
    all.map((x) => x.headers.currency),
    ['USD', 'EUR'],
  );
});

test('same subscriber name shares the messages; different names each get all of them', async (t) => {
  const domain = uniqueDomain();
  const pub = await open(t, { domain, type: 'src', id: 'p1', keepAliveMs: 0 });
  const a = await open(t, { domain, type: 'worker', id: 'a', keepAliveMs: 0 });
  const b = await open(t, { domain, type: 'worker', id: 'b', keepAliveMs: 0 });
  const got = { a: [] as number[], b: [] as number[], solo: [] as number[] };
  const filter = { kind: 'job' };
  await a.subscribeData(`${domain}-workers`, filter, (m) => void got.a.push(m.json<{ n: number }>().n));
  await b.subscribeData(`${domain}-workers`, filter, (m) => void got.b.push(m.json<{ n: number }>().n));
  await b.subscribeData(`${domain}-monitor`, filter, (m) => void got.solo.push(m.json<{ n: number }>().n));

  const N = 20;
  for (let n = 0; n < N; n++) await pub.publishData({ n }, filter);
  await waitFor(() => got.a.length + got.b.length >= N && got.solo.length >= N, 30_000, 'all deliveries');
  // Nothing else comes: markers (n = -1) until each same-name subscriber has had one; each handles
  // its messages in order, so whatever the queue gave it before is in by then.
  await waitFor(
    async () => {
      await pub.publishData({ n: -1 }, filter);
      return got.a.includes(-1) && got.b.includes(-1);
    },
    30_000,
    'a marker on both same-name subscribers',
    50,
  );
  await waitFor(() => got.solo.includes(-1), 30_000, 'the markers on the other name');
  for (const k of ['a', 'b', 'solo'] as const) got[k] = got[k].filter((n) => n !== -1);

  assert.ok(got.a.length > 0 && got.b.length > 0, `load balanced: a=${got.a.length} b=${got.b.length}`);
  assert.equal(got.a.length + got.b.length, N, 'each message once across same-name subscribers');
  assert.deepEqual(
    [...got.a, ...got.b].sort((x, y) => x - y),
    [...Array(N).keys()],
  );
  assert.deepEqual(got.solo, [...Array(N).keys()]);
});

test('a failing handler gets the message once more, then it is dropped; cancel stops deliveries', async (t) => {
  const domain = uniqueDomain();
  const pub = await open(t, { domain, type: 'src', id: 'p1', keepAliveMs: 0 });
  const sub = await open(t, { domain, type: 'dst', id: 'd1', keepAliveMs: 0 });
  const attempts: boolean[] = [];
  const markers: string[] = [];
  const s = await sub.subscribeData(`${domain}-flaky`, { kind: 'x' }, (m) => {
    if (!m.text().includes('boom')) return void markers.push(m.text());
    attempts.push(m.redelivered);
    throw new Error('handler failed');
  });
  await pub.publishData('boom', { kind: 'x' });
  await waitFor(() => attempts.length >= 2, 30_000, 'a redelivery');
  // Dropped after that: a message published later is handled, and "boom" did not come a third time
  // (a requeued copy would have been handed out before it).
  await pub.publishData('marker', { kind: 'x' });
  await waitFor(() => markers.length === 1, 30_000, 'the marker');
  assert.deepEqual(attempts, [false, true]);
  await s.cancel();
  // Cancelled: the subscription's queue (auto-delete) went with its last consumer, so nothing
  // published from now on can reach the handler.
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const gone = async (): Promise<boolean> => {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    return ch.checkQueue(`${domain}-flaky`).then(
      async () => (await ch.close(), false),
      (err: Error) => /404|NOT_FOUND/.test(err.message),
    );
  };
  await waitFor(gone, 30_000, 'the queue deleted with its consumer');
  assert.equal(markers.length, 1);
});

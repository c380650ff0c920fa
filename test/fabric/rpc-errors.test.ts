/** Remote errors as typed data, and calls nobody can serve failing at once. */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import amqp from 'amqplib';
import { InvalidNameError, RemoteError, ServiceError, ServiceNotFoundError } from '../../src/fabric/index.js';
import { AMQP_URL, open, timed, uniqueDomain, waitFor } from './helpers.js';

const api = {
  bad: ({ x }: { x: number }) => {
    throw new ServiceError('ValueError', `x must be positive, got ${x}`, { field: 'x' });
  },
  typeBug: () => {
    const o = undefined as unknown as { a: number };
    return o.a;
  },
  plain: async () => {
    await new Promise((r) => setImmediate(r));
    throw new Error('plain failure');
  },
  thrownString: () => {
    throw 'just a string'; // eslint-disable-line @typescript-eslint/only-throw-error
  },
  unserializable: () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    return a;
  },
};

test('remote errors arrive as RemoteError { type, message, args } with built-in Python type names only', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'svc', id: 's1' });
  await server.rpcRegister(api);
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const p = await client.rpcProxy<Record<string, (a?: object) => Promise<unknown>>>(domain, 's1', 'svc', {
    timeoutMs: 5000,
  });

  const err = (await p.bad!({ x: -1 }).catch((e: unknown) => e)) as RemoteError;
  assert.ok(err instanceof RemoteError);
  assert.equal(err.type, 'ValueError');
  assert.equal(err.message, 'x must be positive, got -1');
  assert.deepEqual(err.args, ['x must be positive, got -1', { field: 'x' }]);

  await assert.rejects(p.typeBug!(), (e: RemoteError) => e instanceof RemoteError && e.type === 'TypeError');
  await assert.rejects(p.plain!(), (e: RemoteError) => e.type === 'RuntimeError' && e.message === 'plain failure');
  await assert.rejects(
    p.thrownString!(),
    (e: RemoteError) => e.type === 'RuntimeError' && e.message === 'just a string',
  );
  await assert.rejects(p.unserializable!(), (e: RemoteError) => e.type === 'TypeError' && /circular/i.test(e.message));
});

test('a call body that is not a JSON object gets a TypeError reply, like a Python service', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'svc', id: 's1' });
  await server.rpcRegister(api);
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const replies: amqp.ConsumeMessage[] = [];
  await ch.consume(queue, (m) => m && replies.push(m), { noAck: true });
  const ex = `${domain}.api.svc.s1`;
  for (const body of ['[5, 7]', 'not json', ''])
    ch.publish(ex, `${ex}::bad`, Buffer.from(body), { replyTo: queue, correlationId: randomUUID(), type: 'call' });
  await waitFor(() => replies.length >= 3, 30_000, 'three replies');
  assert.equal(replies.length, 3);
  for (const r of replies) {
    assert.equal(r.properties.type, 'error');
    assert.equal(r.properties.contentType, 'application/json');
    const body = JSON.parse(r.content.toString()) as { error: { type: string; message: string; args: unknown[] } };
    assert.equal(body.error.type, 'TypeError');
    assert.ok(Array.isArray(body.error.args));
  }
});

test('an unknown method or service fails at once, well under the timeout; nothing is leaked', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'svc', id: 's1' });
  await server.rpcRegister(api);
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });

  const p = await client.rpcProxy<Record<string, () => Promise<unknown>>>(domain, 's1', 'svc', { timeoutMs: 5000 });
  const noMethod = await timed(p.nope!());
  assert.ok(noMethod.error instanceof ServiceNotFoundError, String(noMethod.error));
  // 'no_route' (the broker returned the call), not a timeout at the 5 s deadline.
  assert.equal(noMethod.error.reason, 'no_route');

  const ghost = await client.rpcProxy<Record<string, () => Promise<unknown>>>(domain, 'ghost', 'svc', {
    timeoutMs: 5000,
  });
  const noService = await timed(ghost.anything!());
  assert.ok(noService.error instanceof ServiceNotFoundError, String(noService.error));
  assert.equal(noService.error.reason, 'no_service');

  // amqp-fabric's proxy declares the target's exchange and leaks it; the passive check must not.
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  await assert.rejects(ch.checkExchange(`${domain}.api.svc.ghost`), /404|NOT_FOUND/);

  // Still usable afterwards, and bad names are refused before anything is sent.
  assert.equal(await p.health_check(), true);
  await assert.rejects(client.rpcProxy('bad.domain', 'x', 'y'), InvalidNameError);
  await assert.rejects(client.rpcCall({ domain, type: 'svc', id: 's1' }, 'no-dash'), InvalidNameError);
});

test('a service that stops is reported as not found by a long-lived proxy (its exchange vanished)', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'svc', id: 's1', keepAliveMs: 0 });
  await server.rpcRegister(api);
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const p = await client.rpcProxy<Record<string, () => Promise<unknown>>>(domain, 's1', 'svc', { timeoutMs: 3000 });
  assert.equal(await p.health_check(), true);
  await server.close();
  // Not found (a timeout would be an RpcTimeoutError at the 3 s deadline).
  const r = await timed(p.health_check());
  assert.ok(r.error instanceof ServiceNotFoundError, String(r.error));
  // and the proxy keeps working for the next call (no hang, unlike amqp-fabric's after a 404)
  const again = await timed(p.health_check());
  assert.ok(again.error instanceof ServiceNotFoundError, String(again.error));
});

/** POST /v1/rpc/:domain/:type/:id/:method on a real fastify instance, against a real service. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { AmeboError } from '../../src/errors.js';
import { ServiceError } from '../../src/fabric/index.js';
import { rpcGatewayRoutes } from '../../src/fabric/gateway.js';
import { open, uniqueDomain } from './helpers.js';

test('gateway: 200 with the result, 404 no service or method, 502 remote error, 504 timeout, 400 bad input', async (t) => {
  const domain = uniqueDomain();
  let slowCalls = 0;
  let release!: () => void;
  const slowGate = new Promise<void>((r) => (release = r));
  t.after(() => release());
  const svc = await open(t, { domain, type: 'calc', id: 'c1', keepAliveMs: 0, drainTimeoutMs: 1000 });
  await svc.rpcRegister({
    multiply: ({ x, y }: { x: number; y: number }) => x * y,
    big: () => ({ n: 12345678901234567890123n, nan: NaN }),
    fail: ({ why }: { why: string }) => {
      throw new ServiceError('ValueError', why);
    },
    // Answers only once the test lets it: a 504 while it still holds was sent at the deadline.
    slow: async () => {
      slowCalls++;
      await slowGate;
      return 'late';
    },
  });
  const fabric = await open(t, { domain, type: 'gateway', id: 'g1', keepAliveMs: 0 });
  const app = Fastify();
  // What the API's error handler does: AmeboError → its status and toJSON().
  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof AmeboError) return reply.status(err.status).send(err.toJSON());
    return reply
      .status((err as { statusCode?: number }).statusCode ?? 500)
      .send({ error: { code: 'AMEBO_ERR_INTERNAL', message: (err as Error).message } });
  });
  await app.register(rpcGatewayRoutes, { fabric, defaultTimeoutMs: 3000 });
  t.after(() => app.close());
  const post = async (path: string, body?: unknown) => {
    const res = await app.inject({
      method: 'POST',
      url: path,
      ...(body === undefined ? {} : { payload: body as object }),
    });
    return { status: res.statusCode, body: res.json<Record<string, any>>() };
  };
  const base = `/v1/rpc/${domain}/calc/c1`;

  assert.deepEqual(await post(`${base}/multiply`, { x: 6, y: 7 }), { status: 200, body: { result: 42 } });
  assert.deepEqual(await post(`${base}/health_check`), { status: 200, body: { result: true } });
  const big = await app.inject({ method: 'POST', url: `${base}/big`, payload: {} });
  assert.equal(big.statusCode, 200);
  // strict JSON for HTTP: digits kept, NaN as null
  assert.equal(big.body, '{"result":{"n":12345678901234567890123,"nan":null}}');

  const noMethod = await post(`${base}/divide`, {});
  assert.equal(noMethod.status, 404);
  assert.equal(noMethod.body.error.code, 'AMEBO_ERR_SERVICE_NOT_FOUND');
  const noService = await post(`/v1/rpc/${domain}/calc/nobody/multiply`, {});
  assert.equal(noService.status, 404);
  assert.equal(noService.body.error.code, 'AMEBO_ERR_SERVICE_NOT_FOUND');

  const remote = await post(`${base}/fail`, { why: 'x must be positive' });
  assert.equal(remote.status, 502);
  assert.equal(remote.body.error.code, 'AMEBO_ERR_RPC_REMOTE');
  assert.equal(typeof remote.body.error.message, 'string');
  assert.deepEqual(remote.body.error.details, { type: 'ValueError', message: 'x must be positive' });

  const slow = await post(`${base}/slow?timeout_ms=200`, {});
  assert.equal(slow.status, 504);
  assert.equal(slow.body.error.code, 'AMEBO_ERR_RPC_TIMEOUT');
  assert.equal(slowCalls, 1, 'answered at the deadline, while the handler still held the call');
  release();

  for (const [path, body] of [
    [`${base}/multiply`, [1, 2]],
    [`${base}/multiply?timeout_ms=abc`, {}],
    [`${base}/multiply?timeout_ms=0`, {}],
    [`/v1/rpc/bad.domain/calc/c1/multiply`, {}],
  ] as const) {
    const r = await post(path, body);
    assert.equal(r.status, 400, path);
    assert.equal(r.body.error.code, 'AMEBO_ERR_VALIDATION');
  }
});

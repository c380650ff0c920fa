/** TypeScript service ↔ TypeScript caller: results, keyword arguments, which methods are exposed. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import { ServiceNotFoundError } from '../../src/fabric/index.js';
import { AMQP_URL, open, uniqueDomain } from './helpers.js';

interface Calc {
  multiply(a: { x: number; y: number }): number;
  echo(a: { value: unknown }): unknown;
  noArgs(a: Record<string, never>): { got: Record<string, unknown> };
  nothing(a: Record<string, never>): undefined;
  big(a: Record<string, never>): bigint;
}

class CalcApi {
  private readonly factor = 1;
  multiply({ x, y }: { x: number; y: number }): number {
    return x * y * this.factor;
  }
  async echo({ value }: { value: unknown }): Promise<unknown> {
    await new Promise((r) => setImmediate(r));
    return value;
  }
  noArgs(args: Record<string, unknown>): { got: Record<string, unknown> } {
    return { got: args };
  }
  nothing(): undefined {
    return undefined;
  }
  big(): bigint {
    return 12345678901234567890123n;
  }
  _hidden(): string {
    return 'must not be callable';
  }
}

test('calls return results, with keyword arguments, Python-only numbers and unicode intact', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'calc', id: 'c1' });
  const reg = await server.rpcRegister(new CalcApi());
  assert.deepEqual([...reg.methods].sort(), ['big', 'echo', 'health_check', 'multiply', 'noArgs', 'nothing']);
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const calc = await client.rpcProxy<Calc>(domain, 'c1', 'calc', { timeoutMs: 5000 });

  assert.equal(await calc.multiply({ x: 5, y: 7 }), 35);
  assert.equal(await calc.health_check(), true);
  assert.deepEqual(await calc.noArgs(), { got: {} });
  assert.equal(await calc.nothing(), null);
  assert.equal(await calc.big(), 12345678901234567890123n);
  const odd = {
    s: 'héllo ✓ 日本',
    n: NaN,
    inf: Infinity,
    ninf: -Infinity,
    big: -98765432109876543210n,
    nested: [1, { a: null }],
  };
  const back = (await calc.echo({ value: odd })) as typeof odd;
  assert.equal(back.s, odd.s);
  assert.ok(Number.isNaN(back.n));
  assert.equal(back.inf, Infinity);
  assert.equal(back.ninf, -Infinity);
  assert.equal(back.big, odd.big);
  assert.deepEqual(back.nested, odd.nested);
  // rpcCall: the run-time form used by the gateway and the CLI (domain, type, id order).
  assert.equal(await client.rpcCall({ domain, type: 'calc', id: 'c1' }, 'multiply', { x: 2, y: 3 }), 6);
  // `await proxy` must not be mistaken for a thenable call.
  assert.equal((calc as unknown as { then?: unknown }).then, undefined);
});

test('only the explicit set of methods is exposed: no underscore names, `methods` restricts, maps work', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'calc', id: 'c1' });
  await server.rpcRegister(new CalcApi(), { methods: ['multiply'] });
  const other = await open(t, { domain, type: 'mapped', id: 'm1' });
  await other.rpcRegister(new Map([['add', ({ a, b }: { a: number; b: number }) => a + b]]));
  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });

  const calc = await client.rpcProxy<Record<string, (a?: object) => Promise<unknown>>>(domain, 'c1', 'calc');
  assert.equal(await calc.multiply!({ x: 2, y: 2 }), 4);
  for (const m of ['_hidden', 'echo']) await assert.rejects(calc[m]!({}), ServiceNotFoundError, m);
  const mapped = await client.rpcProxy<{ add(a: { a: number; b: number }): number }>(domain, 'm1', 'mapped');
  assert.equal(await mapped.add({ a: 40, b: 2 }), 42);
  assert.equal(await mapped.health_check(), true);
});

test('declarations are byte-for-byte amqp-fabric’s (a peer declaring the same objects gets no 406)', async (t) => {
  const domain = uniqueDomain();
  const server = await open(t, { domain, type: 'calc', id: 'c1' });
  await server.rpcRegister({ multiply: ({ x, y }: { x: number; y: number }) => x * y });
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const ch = await conn.createChannel();
  const ex = `${domain}.api.calc.c1`;
  // Exactly what aio-pika 9.x declares for amqp-fabric (wire spec §0); a mismatch closes the channel.
  await ch.assertExchange(ex, 'direct', { durable: false, autoDelete: true, internal: false });
  await ch.assertQueue(`${ex}::multiply`, {
    durable: false,
    autoDelete: true,
    exclusive: false,
    arguments: { 'x-dead-letter-exchange': 'rpc.dlx' },
  });
  await ch.assertExchange('rpc.dlx', 'headers', { durable: false, autoDelete: true });
  const q = await ch.checkQueue(`${ex}::multiply`);
  assert.equal(q.consumerCount, 1);
});

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { SchemaCompiler } from '../../src/schema-compiler.js';
import { compileSchema, loadValidator, validatorSource } from '../../src/schema.js';
import formatsModule from 'ajv-formats/dist/formats.js';

const { fullFormats } = formatsModule as unknown as { fullFormats: Record<string, unknown> };

// The schema compiler: validators built on a worker thread and loaded on the event loop must
// behave as ajv's own compile does, and hostile schemas are refused without freezing the loop.

const compilers: SchemaCompiler[] = [];
const compiler = (o: Partial<ConstructorParameters<typeof SchemaCompiler>[0]> = {}): SchemaCompiler => {
  const c = new SchemaCompiler({ timeoutMs: 10_000, maxCodeBytes: 1024 * 1024, ...o });
  compilers.push(c);
  return c;
};
after(async () => {
  for (const c of compilers) await c.close();
});

/** `n` string properties, each with its own pattern: ajv's code generation is quadratic in them. */
const patterned = (n: number): Record<string, unknown> => ({
  type: 'object',
  properties: Object.fromEntries(
    Array.from({ length: n }, (_, i) => [`p${i}`, { type: 'string', pattern: `^a${i}[a-z]+$` }]),
  ),
});
const plain = (n: number): Record<string, unknown> => ({
  type: 'object',
  properties: Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, { type: 'string', maxLength: 10 }])),
});

const formatSamples = [
  '',
  'x',
  'a@b.co',
  '2020-01-01',
  '2020-01-01T10:00:00Z',
  '10:00:00Z',
  '::1',
  '10.0.0.1',
  'ex.com',
  'https://ex.com/a?b=c',
  '/a/b',
  'P1D',
  '123',
  '00000000-0000-0000-0000-000000000000',
  'aGk=',
  '^a+$',
  '(',
  '#/a',
  'a'.repeat(300),
];

const CORPUS: [string, Record<string, unknown>, unknown[]][] = [
  [
    'formats, each of ajv-formats',
    {
      type: 'object',
      properties: Object.fromEntries(Object.keys(fullFormats).map((f) => [f, { type: 'string', format: f }])),
    },
    [{}, ...formatSamples.map((s) => Object.fromEntries(Object.keys(fullFormats).map((f) => [f, s])))],
  ],
  [
    'patterns, required, additionalProperties, patternProperties',
    {
      type: 'object',
      properties: { s: { type: 'string', pattern: '^(a+)+$', minLength: 2 }, n: { type: 'integer', minimum: 0 } },
      patternProperties: { '^x_': { type: 'number' } },
      additionalProperties: false,
      required: ['s'],
    },
    [{}, { s: 'aa' }, { s: 'aa!', n: -1 }, { s: 'a', x_1: 'no' }, { s: 'aaa', x_2: 2, other: true }, 'str', null],
  ],
  [
    'recursive $ref through $defs, if/then/else, dependentRequired, unevaluatedProperties (2020-12)',
    {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $defs: {
        node: {
          type: 'object',
          properties: { v: { type: 'number' }, kids: { type: 'array', items: { $ref: '#/$defs/node' } } },
          required: ['v'],
        },
      },
      type: 'object',
      properties: { tree: { $ref: '#/$defs/node' }, kind: { enum: ['a', 'b'] }, a: { const: 1 } },
      if: { properties: { kind: { const: 'a' } } },
      then: { required: ['a'] },
      else: { required: ['tree'] },
      dependentRequired: { kind: ['tree'] },
      unevaluatedProperties: false,
    },
    [
      {},
      { kind: 'a', a: 1, tree: { v: 1, kids: [{ v: 2 }, { v: 'x' }] } },
      { kind: 'b', tree: { v: 1, kids: [{ v: 2, kids: [{}] }] } },
      { kind: 'a', tree: { v: 1 }, extra: 1 },
      { kind: 'a', a: 1, tree: { v: 1, kids: [{ v: 2 }] } },
      { tree: { v: 1 } },
    ],
  ],
  [
    'draft-07 definitions, oneOf, uniqueItems, contains, propertyNames',
    {
      $schema: 'http://json-schema.org/draft-07/schema#',
      definitions: { pos: { type: 'integer', exclusiveMinimum: 0 } },
      type: 'object',
      properties: {
        ids: { type: 'array', items: { $ref: '#/definitions/pos' }, uniqueItems: true, contains: { const: 7 } },
        pick: { oneOf: [{ type: 'string' }, { type: 'number', multipleOf: 0.5 }] },
      },
      propertyNames: { maxLength: 4 },
    },
    [{}, { ids: [7, 1] }, { ids: [1, 1] }, { ids: [0] }, { pick: 1.5 }, { pick: 1.3 }, { pick: null }, { longname: 1 }],
  ],
  [
    '$dynamicRef and $dynamicAnchor (2020-12)',
    {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $dynamicAnchor: 'meta',
      type: 'object',
      properties: { child: { $dynamicRef: '#meta' }, n: { type: 'number' } },
    },
    [{}, { child: { n: 1 } }, { child: { child: { n: 'x' } } }],
  ],
];

test('validators from the worker accept and reject exactly as ajv compile does, with the same errors', async () => {
  const c = compiler();
  for (const [name, schema, instances] of CORPUS) {
    const worker = await c.compile(schema);
    const inline = compileSchema(schema);
    let rejected = 0;
    for (const x of instances) {
      const ok = worker(x);
      assert.equal(ok, inline(x), `${name}: ${JSON.stringify(x).slice(0, 120)}`);
      assert.deepEqual(
        worker.errors ?? null,
        inline.errors ?? null,
        `${name}: errors of ${JSON.stringify(x).slice(0, 120)}`,
      );
      if (!ok) rejected++;
    }
    // Each case has instances on both sides (so an always-true or always-false validator fails it).
    assert.ok(rejected > 0 && rejected < instances.length, `${name}: ${rejected} of ${instances.length} rejected`);
  }
});

test('an invalid schema is refused with the same SCHEMA_INVALID and details as an inline compile', async () => {
  const c = compiler();
  for (const bad of [
    { type: 'web' },
    { type: 'string', pattern: '(?=a)b' },
    { $schema: 'https://example.com/other' },
  ]) {
    let inline: unknown;
    try {
      compileSchema(bad);
    } catch (err) {
      inline = err;
    }
    await assert.rejects(c.compile(bad), (err: { code: string; message: string; details: unknown }) => {
      const i = inline as typeof err;
      assert.equal(err.code, 'AMEBO_ERR_SCHEMA_INVALID');
      assert.equal(err.message, i.message);
      assert.deepEqual(err.details, i.details);
      return true;
    });
  }
});

test('a schema past the compile deadline is refused, the event loop runs meanwhile, and the next compile works', async () => {
  const c = compiler({ timeoutMs: 400 });
  // Counts event-loop turns during the compile: inline, this compile holds the loop for seconds and
  // none would run until it ended.
  let turns = 0;
  let compiling = true;
  const turn = (): void => {
    if (!compiling) return;
    turns++;
    setImmediate(turn);
  };
  setImmediate(turn);
  // 4,000 patterned properties: 13 s of ajv compile on this machine.
  await assert
    .rejects(c.compile(patterned(4000)), /takes longer than 400 ms to compile/)
    .finally(() => (compiling = false));
  assert.ok(turns >= 100, `the event loop turned ${turns} times during the compile`);
  const v = await c.compile({ type: 'string', maxLength: 2 });
  assert.equal(v('ab'), true);
  assert.equal(v('abc'), false);
});

test('a schema whose validator is larger than maxCodeBytes is refused; a smaller one loads', async () => {
  const c = compiler({ maxCodeBytes: 64 * 1024 });
  await assert.rejects(c.compile(plain(600)), /compiles to a \d+-byte validator, more than 65536/);
  const v = await c.compile(plain(10));
  assert.equal(v({ p1: 'short' }), true);
  assert.equal(v({ p1: 'far too long for it' }), false);
});

test('the queue is bounded for new schemas (429), not for stored ones, which go first', async () => {
  const c = compiler({ maxQueue: 2 });
  const order: string[] = [];
  const track = (name: string, p: Promise<unknown>) =>
    p.then(
      () => order.push(name),
      (err: Error) => order.push(`${name}: ${err.message}`),
    );
  const running = track('slow', c.compile(patterned(600)));
  await new Promise((r) => setTimeout(r, 50)); // the slow one is in the worker
  const a = track('new-a', c.compile({ type: 'number' }));
  const b = track('new-b', c.compile({ type: 'string' }));
  await assert.rejects(c.compile({ type: 'boolean' }), (err: { code: string; headers: Record<string, string> }) => {
    assert.equal(err.code, 'AMEBO_ERR_RATE_LIMITED');
    assert.equal(err.headers['retry-after'], '1');
    return true;
  });
  const s = track('stored', c.compile({ type: 'integer' }, true));
  await Promise.all([running, a, b, s]);
  assert.deepEqual(order, ['slow', 'stored', 'new-a', 'new-b']);
});

test('a compile that runs out of the worker heap is refused; the compiler goes on', async () => {
  const c = compiler({ heapMb: 48 });
  await assert.rejects(c.compile(plain(20_000)), /needs more than 48 MB/);
  assert.equal((await c.compile({ type: 'null' }))(null), true);
});

test('a validator module may require only ajv runtime helpers and the two Amebo names', () => {
  const src = validatorSource({ type: 'string', format: 'email', pattern: '^a' });
  assert.match(src, /require\("amebo:formats"\)/);
  assert.match(src, /require\("amebo:linearRegExp"\)/);
  const v = loadValidator(src);
  assert.equal(v('a@b.co'), true);
  assert.equal(v('b@b.co'), false);
  assert.throws(() => loadValidator('require("node:fs");'), /may not require "node:fs"/);
  assert.throws(() => loadValidator('require("ajv/../../../etc/passwd");'), /may not require/);
});

test('warm() starts the worker before any compile; the first compile runs on it', async () => {
  const c = compiler();
  assert.equal(c.warmed, false, 'no worker before warm() or a compile');
  await c.warm();
  assert.equal(c.warmed, true);
  const w = (c as unknown as { worker: unknown }).worker;
  const v = await c.compile({ type: 'integer' });
  assert.equal(v(3), true);
  assert.equal((c as unknown as { worker: unknown }).worker, w, 'the warmed worker, not a second one');
  await c.warm(); // again: at once, the same worker
  assert.equal((c as unknown as { worker: unknown }).worker, w);
});

test('warm() after close() resolves without starting a worker', async () => {
  const c = new SchemaCompiler({ timeoutMs: 10_000, maxCodeBytes: 1024 * 1024 });
  await c.close();
  await c.warm();
  assert.equal(c.warmed, false);
});

test('close() rejects what waits and later calls', async () => {
  const c = new SchemaCompiler({ timeoutMs: 10_000, maxCodeBytes: 1024 * 1024 });
  const slow = assert.rejects(c.compile(patterned(600)), /closed/);
  const queued = assert.rejects(c.compile({ type: 'number' }), /closed/);
  await c.close();
  await slow;
  await queued;
  await assert.rejects(c.compile({ type: 'number' }), /closed/);
});

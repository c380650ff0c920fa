import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compatibilityProblems, compileSchema, depth, normalizeSchema } from '../../src/schema.js';
import { AmeboError } from '../../src/errors.js';

const base = {
  type: 'object',
  properties: {
    user_id: { type: 'string' },
    plan: { type: 'string', enum: ['free', 'premium'] },
    age: { type: 'integer', minimum: 0 },
  },
  required: ['user_id'],
};

test('BACKWARD accepts adding an optional property and widening an enum', () => {
  const next = structuredClone(base) as any;
  next.properties.name = { type: 'string' };
  next.properties.plan.enum.push('team');
  assert.deepEqual(compatibilityProblems(base, next, 'BACKWARD'), []);
});

test('BACKWARD rejects a new required property, a removed enum value, a narrowed type, a raised minimum', () => {
  const next = structuredClone(base) as any;
  next.required.push('plan');
  next.properties.plan.enum = ['premium'];
  next.properties.user_id.type = 'integer';
  next.properties.age.minimum = 18;
  const problems = compatibilityProblems(base, next, 'BACKWARD');
  assert.ok(
    problems.some((p) => p.includes('"plan" became required')),
    problems.join('\n'),
  );
  assert.ok(problems.some((p) => p.includes('enum value "free" was removed')));
  assert.ok(problems.some((p) => p.includes('/properties/user_id: type "string" is no longer accepted')));
  assert.ok(problems.some((p) => p.includes('minimum was added or raised')));
});

test('closing an open object breaks BACKWARD; FORWARD sees a removed requirement', () => {
  const closed = { ...base, additionalProperties: false };
  assert.ok(compatibilityProblems(base, closed, 'BACKWARD').some((p) => p.includes('additionalProperties was closed')));
  const relaxed = { ...base, required: [] };
  assert.deepEqual(compatibilityProblems(base, relaxed, 'BACKWARD'), []);
  assert.ok(compatibilityProblems(base, relaxed, 'FORWARD').some((p) => p.includes('"user_id" became required')));
  assert.ok(compatibilityProblems(base, relaxed, 'FULL').length > 0);
  assert.deepEqual(compatibilityProblems(base, { type: 'null' }, 'NONE'), []);
});

test('keywords the checker does not model are breaks unless unchanged', () => {
  const a = { anyOf: [{ type: 'string' }, { type: 'number' }] };
  assert.deepEqual(compatibilityProblems(a, structuredClone(a), 'BACKWARD'), []);
  assert.ok(compatibilityProblems(a, { anyOf: [{ type: 'string' }] }, 'BACKWARD')[0]!.includes('cannot be proven'));
});

test('normalizeSchema takes strings, rejects non-objects and oversize schemas', () => {
  assert.deepEqual(normalizeSchema('{"type":"object"}', 1000), { type: 'object' });
  assert.deepEqual(normalizeSchema(true, 1000), {});
  for (const bad of ['not json', '[1]', 42, null])
    assert.throws(
      () => normalizeSchema(bad, 1000),
      (e: AmeboError) => e.code === 'AMEBO_ERR_SCHEMA_INVALID',
    );
  assert.throws(() => normalizeSchema({ description: 'x'.repeat(2000) }, 1000), /larger than/);
});

test('compileSchema rejects invalid schemas with details and accepts draft-07', () => {
  assert.throws(
    () => compileSchema({ type: 'web' }),
    (e: AmeboError) =>
      e.code === 'AMEBO_ERR_SCHEMA_INVALID' && Array.isArray(e.details) && (e.details as unknown[]).length > 0,
  );
  const v = compileSchema({ $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', required: ['a'] });
  assert.equal(v({ a: 1 }), true);
  assert.equal(v({}), false);
  // Two schemas with the same $id must not collide (they are never registered by id).
  compileSchema({ $id: 'https://x/s.json', type: 'string' });
  assert.equal(compileSchema({ $id: 'https://x/s.json', type: 'number' })(3), true);
  assert.throws(() => compileSchema({ $schema: 'https://example.com/other' }), /unsupported \$schema/);
});

test('depth counts nesting without recursion and stops past the limit', () => {
  assert.equal(depth(1), 0);
  assert.equal(depth({ a: [{ b: 1 }] }), 3);
  let deep: unknown = 0;
  for (let i = 0; i < 100_000; i++) deep = [deep];
  assert.equal(depth(deep, 64), 65);
});

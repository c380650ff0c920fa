/** Python's JSON: NaN, Infinity and big integers read correctly, and only outside strings. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodePythonJson, encodeStrictJson, JsonDecodeError, parsePythonJson } from '../../src/fabric/index.js';
import { fromWireError } from '../../src/fabric/errors.js';

test('parses what json.dumps writes: NaN, Infinity, -Infinity, integers beyond 2^53', () => {
  const v = parsePythonJson(
    '{"a": NaN, "b": [Infinity, -Infinity], "big": 12345678901234567890123, "neg": -98765432109876543210, "f": 1.5e300, "s": 9007199254740991}',
  ) as Record<string, unknown>;
  assert.ok(Number.isNaN(v.a));
  assert.deepEqual(v.b, [Infinity, -Infinity]);
  assert.equal(v.big, 12345678901234567890123n);
  assert.equal(v.neg, -98765432109876543210n);
  assert.equal(v.f, 1.5e300);
  assert.equal(v.s, 9007199254740991);
  assert.ok(Number.isNaN(parsePythonJson('NaN')));
  assert.equal(parsePythonJson('-Infinity'), -Infinity);
  assert.equal(parsePythonJson(Buffer.from('35')), 35);
  // a long float keeps being a float, not a bigint
  assert.equal(parsePythonJson('1234567890123456789.5'), Number('1234567890123456789.5'));
});

test('the special tokens inside strings stay text, escapes and unicode survive', () => {
  const s =
    '{"t": "NaN Infinity -Infinity 12345678901234567890123", "e": "q\\"uote \\\\ \\u00e9 \\ud83d\\ude00", "k": "héllo"}';
  assert.deepEqual(parsePythonJson(s), {
    t: 'NaN Infinity -Infinity 12345678901234567890123',
    e: 'q"uote \\ é 😀',
    k: 'héllo',
  });
  const proto = parsePythonJson('{"__proto__": {"polluted": 1}, "n": NaN}') as Record<string, unknown>;
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.deepEqual(Object.keys(proto), ['__proto__', 'n']);
});

test('invalid JSON is a clear decode error with a position', () => {
  for (const bad of ['', 'not json', '{"a": }', '[1, 2', '{"a" 1}', 'nan', 'Infinityy', '"unterminated', '01']) {
    assert.throws(() => parsePythonJson(bad), JsonDecodeError, JSON.stringify(bad));
  }
  assert.throws(() => parsePythonJson('['.repeat(10_000)), /Nested too deeply/);
});

test('encodes like json.dumps(ensure_ascii=False) for peers, strict JSON for HTTP', () => {
  const v = {
    n: NaN,
    i: Infinity,
    m: -Infinity,
    big: 2n ** 80n,
    s: 'é',
    d: new Date(0),
    u: undefined,
    a: [undefined, 1],
  };
  assert.equal(
    encodePythonJson(v),
    '{"n":NaN,"i":Infinity,"m":-Infinity,"big":1208925819614629174706176,"s":"é","d":"1970-01-01T00:00:00.000Z","a":[null,1]}',
  );
  assert.equal(
    encodeStrictJson(v),
    '{"n":null,"i":null,"m":null,"big":1208925819614629174706176,"s":"é","d":"1970-01-01T00:00:00.000Z","a":[null,1]}',
  );
  assert.deepEqual(parsePythonJson(encodePythonJson({ x: [1, 'two', null, true] })), { x: [1, 'two', null, true] });
  const cyc: Record<string, unknown> = { big: 1n };
  cyc.self = cyc;
  assert.throws(() => encodePythonJson(cyc), /circular/);
});

test('remote error bodies: the envelope, or a bare string; the type is never resolved to code', () => {
  const e = fromWireError({ error: { type: 'builtins.print', message: "ValueError('x')", args: ['x', 1] } });
  assert.deepEqual([e.type, e.message, e.args], ['builtins.print', "ValueError('x')", ['x', 1]]);
  const bare = fromWireError("ValueError('Circular reference detected')");
  assert.deepEqual(
    [bare.type, bare.message, bare.args],
    ['ValueError', "ValueError('Circular reference detected')", []],
  );
  assert.equal(fromWireError([1]).type, 'Error');
});

/**
 * JSON as Python writes and reads it. `json.dumps` emits bare `NaN`, `Infinity` and `-Infinity`
 * and integers of any size, none of which `JSON.parse` handles (the first three throw, big integers
 * silently lose digits). The parser here accepts all of them; the encoder writes them back so a
 * Python peer gets the same values it would get from another Python peer.
 */

/** A value that crosses the wire. Integers beyond 2^53 are `bigint`. */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };

export class JsonDecodeError extends Error {
  override name = 'JsonDecodeError';
  readonly position: number;
  constructor(message: string, position: number) {
    super(`${message} at position ${position}`);
    this.position = position;
  }
}

/** Deepest nesting encoded or decoded; deeper values are refused. */
export const MAX_DEPTH = 512;

/** Nesting depth of a JSON value, without recursion (payloads may be hostile). */
export function nestingDepth(value: unknown, limit = Infinity): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (d > max) {
      max = d;
      if (max > limit) return max;
    }
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, d + 1]);
  }
  return max;
}

/** Any run of 16+ digits may be an integer past 2^53 (or a long string: the slow path is still right). */
const MAYBE_BIG = /\d{16}/;

/**
 * Parses JSON text the way Python's `json.loads` does: standard JSON plus `NaN`, `Infinity`,
 * `-Infinity`; integers that do not fit a double exactly come back as `bigint`.
 * The common case (small numbers, valid JSON) goes through the native parser.
 * @throws {JsonDecodeError} on anything else that is not JSON.
 */
export function parsePythonJson(text: string | Buffer): JsonValue {
  const s = typeof text === 'string' ? text : text.toString('utf8');
  if (!MAYBE_BIG.test(s)) {
    try {
      return JSON.parse(s) as JsonValue;
    } catch {
      // fall through: NaN/Infinity, or genuinely invalid (the slow parser says where)
    }
  }
  return new Parser(s).parseDocument();
}

class Parser {
  private i = 0;
  private readonly s: string;
  constructor(s: string) {
    this.s = s;
  }

  parseDocument(): JsonValue {
    this.ws();
    const v = this.value(0);
    this.ws();
    if (this.i < this.s.length) this.fail('Extra data');
    return v;
  }

  private fail(msg: string): never {
    throw new JsonDecodeError(msg, this.i);
  }

  private ws(): void {
    const s = this.s;
    let c = s.charCodeAt(this.i);
    while (c === 32 || c === 10 || c === 13 || c === 9) c = s.charCodeAt(++this.i);
  }

  private value(depth: number): JsonValue {
    if (depth > MAX_DEPTH) this.fail('Nested too deeply');
    const c = this.s[this.i];
    switch (c) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case 't':
        return this.literal('true', true);
      case 'f':
        return this.literal('false', false);
      case 'n':
        return this.literal('null', null);
      case 'N':
        return this.literal('NaN', NaN);
      case 'I':
        return this.literal('Infinity', Infinity);
      case '-':
        if (this.s.startsWith('-Infinity', this.i)) return this.literal('-Infinity', -Infinity);
        return this.number();
      default:
        if (c !== undefined && c >= '0' && c <= '9') return this.number();
        return this.fail('Expecting value');
    }
  }

  private literal<T extends JsonValue>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail('Expecting value');
    this.i += word.length;
    return v;
  }

  private number(): number | bigint {
    const re = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
    re.lastIndex = this.i;
    const m = re.exec(this.s);
    if (!m) return this.fail('Expecting value');
    this.i += m[0].length;
    const n = Number(m[0]);
    if (m[1] === undefined && m[2] === undefined && !Number.isSafeInteger(n)) return BigInt(m[0]);
    return n;
  }

  private string(): string {
    const s = this.s;
    const start = this.i;
    let j = start + 1;
    let escaped = false;
    for (;;) {
      const c = s.charCodeAt(j);
      if (Number.isNaN(c)) {
        this.i = start;
        this.fail('Unterminated string');
      }
      if (c === 34) break;
      if (c === 92) {
        escaped = true;
        j += 2;
        continue;
      }
      if (c < 32) {
        this.i = j;
        this.fail('Invalid control character');
      }
      j++;
    }
    this.i = j + 1;
    if (!escaped) return s.slice(start + 1, j);
    try {
      return JSON.parse(s.slice(start, j + 1)) as string;
    } catch {
      this.i = start;
      return this.fail('Invalid escape');
    }
  }

  private array(depth: number): JsonValue[] {
    this.i++;
    const out: JsonValue[] = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
  }

  private object(depth: number): { [key: string]: JsonValue } {
    this.i++;
    const out: { [key: string]: JsonValue } = {};
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('Expecting property name enclosed in double quotes');
      const key = this.string();
      this.ws();
      if (this.s[this.i++] !== ':') {
        this.i--;
        this.fail("Expecting ':' delimiter");
      }
      this.ws();
      const v = this.value(depth + 1);
      // Plain assignment of "__proto__" would replace the prototype instead of adding a key.
      if (key === '__proto__')
        Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
      else out[key] = v;
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') {
        this.i--;
        this.fail("Expecting ',' delimiter");
      }
    }
  }
}

/**
 * Encodes like Python's `json.dumps(v, ensure_ascii=False)`: non-finite numbers as `NaN` /
 * `Infinity` / `-Infinity`, `bigint` as its digits, otherwise what `JSON.stringify` writes
 * (`toJSON` honoured, `undefined` and functions skipped in objects and `null` in arrays).
 * Not valid JSON for strict parsers when it contains non-finite numbers: use {@link encodeStrictJson}
 * for HTTP.
 */
export function encodePythonJson(value: unknown): string {
  // The native encoder is much faster and right whenever there is no bigint and no non-finite number.
  if (!needsCustom(value, 0)) return JSON.stringify(value) ?? 'null';
  return encode(value, false, []) ?? 'null';
}

/** Strict JSON (RFC 8259) for HTTP clients: non-finite numbers become `null`, `bigint` its digits. */
export function encodeStrictJson(value: unknown): string {
  if (!needsCustom(value, 0)) return JSON.stringify(value) ?? 'null';
  return encode(value, true, []) ?? 'null';
}

function needsCustom(v: unknown, depth: number): boolean {
  switch (typeof v) {
    case 'number':
      return !Number.isFinite(v);
    case 'bigint':
      return true;
    case 'object': {
      if (v === null) return false;
      if (depth > MAX_DEPTH) return true;
      if (typeof (v as { toJSON?: unknown }).toJSON === 'function') return true;
      if (Array.isArray(v)) {
        for (const x of v) if (needsCustom(x, depth + 1)) return true;
        return false;
      }
      for (const k in v)
        if (Object.hasOwn(v, k) && needsCustom((v as Record<string, unknown>)[k], depth + 1)) return true;
      return false;
    }
    default:
      return false;
  }
}

function encode(v: unknown, strict: boolean, stack: object[]): string | undefined {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      if (Number.isFinite(v)) return JSON.stringify(v);
      if (strict) return 'null';
      return Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity';
    case 'bigint':
      return v.toString();
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      if (v === null) return 'null';
      if (stack.includes(v)) throw new TypeError('Converting circular structure to JSON');
      if (stack.length >= MAX_DEPTH) throw new TypeError('value nested too deeply to encode');
      stack.push(v);
      try {
        const tj = (v as { toJSON?: unknown }).toJSON;
        if (typeof tj === 'function') return encode((tj as () => unknown).call(v), strict, stack);
        if (Array.isArray(v)) return `[${v.map((x) => encode(x, strict, stack) ?? 'null').join(',')}]`;
        const parts: string[] = [];
        for (const k in v) {
          if (!Object.hasOwn(v, k)) continue;
          const e = encode((v as Record<string, unknown>)[k], strict, stack);
          if (e !== undefined) parts.push(`${JSON.stringify(k)}:${e}`);
        }
        return `{${parts.join(',')}}`;
      } finally {
        stack.pop();
      }
    }
    default:
      return undefined;
  }
}

/**
 * A JSON string literal escaped like Python's default `json.dumps` (`ensure_ascii=True`): every
 * character outside printable ASCII as `\uXXXX`. amqp-fabric's log bodies look like this.
 */
export function asciiJsonString(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

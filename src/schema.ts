import { createRequire } from 'node:module';
import { _, Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import standaloneModule from 'ajv/dist/standalone/index.js';
import addFormatsModule from 'ajv-formats';
import formatsModule from 'ajv-formats/dist/formats.js';
import { RE2JS } from 're2js';
import { AmeboError } from './errors.js';
import { nestingDepth as depth } from './fabric/json.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv | Ajv2020) => void;
const standaloneCode = ((standaloneModule as unknown as { default?: unknown }).default ?? standaloneModule) as (
  ajv: Ajv | Ajv2020,
  validate: ValidateFunction,
) => string;
const { fullFormats } = formatsModule as unknown as { fullFormats: Record<string, unknown> };

/**
 * Every regular expression a user's schema can make Amebo run (`pattern`, `patternProperties`,
 * formats) runs on RE2JS, a linear-time engine: V8's backtracking engine takes exponential time on
 * patterns such as `^(a+)+$`, and a publish would freeze the whole process. RE2 has no lookaround
 * and no backreferences; a schema that needs them is refused with a 422 that says so.
 */
export const linearRegExp = Object.assign(
  (pattern: string, flags: string): { test(s: string): boolean; toString(): string } => {
    try {
      const re = RE2JS.compile(RE2JS.translateRegExp(pattern), flags.includes('i') ? RE2JS.CASE_INSENSITIVE : 0);
      // ajv keys its cache of compiled patterns by toString(): it must name the pattern.
      return { test: (s: string) => re.test(s), toString: () => `/${pattern}/${flags}` };
    } catch (err) {
      throw new UnsupportedPattern(pattern, (err as Error).message);
    }
  },
  // How a validator's source (see `validatorSource`) names this function.
  { code: 'require("amebo:linearRegExp")' },
);

class UnsupportedPattern extends Error {
  constructor(pattern: string, why: string) {
    super(
      `pattern ${JSON.stringify(pattern.slice(0, 200))} cannot run in linear time (${why}); ` +
        'lookaround and backreferences are not supported',
    );
  }
}

/** ajv-formats' formats, each regular expression moved onto the linear engine. */
function linearFormats(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const onRe2 = (re: RegExp): ((s: string) => boolean) => {
    const r = linearRegExp(re.source, re.flags);
    return (s) => r.test(s);
  };
  for (const [name, def] of Object.entries(fullFormats)) {
    if (def instanceof RegExp) {
      try {
        out[name] = onRe2(def);
      } catch {
        /* one of the lookaround formats below */
      }
    } else if (def && typeof def === 'object' && (def as { validate?: unknown }).validate instanceof RegExp) {
      out[name] = { ...def, validate: onRe2((def as { validate: RegExp }).validate) };
    }
  }
  // The three formats whose expressions use lookaround, restated without it.
  const host = linearRegExp(
    '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\\.[a-z0-9](?:[-0-9a-z]{0,61}[0-9a-z])?)*\\.?$',
    'i',
  );
  out.hostname = (s: string) => s.replace(/\.$/, '').length <= 253 && host.test(s);
  const duration = linearRegExp(
    '^P(?:(?:\\d+Y)?(?:\\d+M)?(?:\\d+D)?(?:T(?:\\d+H(?:\\d+M)?(?:\\d+S)?|\\d+M(?:\\d+S)?|\\d+S))?|\\d+W)$',
    '',
  );
  out.duration = (s: string) => s !== 'P' && duration.test(s);
  out.url = (s: string) => {
    if (!/^(?:https?|ftp):\/\//i.test(s) || /\s/.test(s)) return false;
    try {
      return Boolean(new URL(s).hostname);
    } catch {
      return false;
    }
  };
  // `uri` is a function around a large expression: an absolute `uri-reference`.
  const ref = out['uri-reference'] as (s: string) => boolean;
  out.uri = (s: string) => /^[a-z][a-z0-9+.-]*:/i.test(s) && ref(s);
  return out;
}

// Users' schemas are untrusted and many: never register them by $id (two actions may share one),
// collect every violation, tolerate unknown keywords. `source` keeps the generated code, which
// `validatorSource` turns into a module that names the formats and the regex engine by `require`.
const common = {
  allErrors: true,
  strict: false,
  addUsedSchema: false,
  validateFormats: true,
  code: { regExp: linearRegExp, source: true, formats: _`require("amebo:formats")` },
} as const;
const ajv2020 = new Ajv2020(common);
const ajv07 = new Ajv(common);
const formats = linearFormats();
for (const a of [ajv2020, ajv07]) {
  addFormats(a);
  for (const [name, def] of Object.entries(formats)) a.addFormat(name, def as never);
}
/** Every format a schema can name, as the validators use them (ajv-formats' with our linear ones on top). */
const FORMATS: Record<string, unknown> = { ...(ajv2020 as unknown as { formats: Record<string, unknown> }).formats };
for (const [name, def] of Object.entries(FORMATS))
  if (def instanceof RegExp) throw new Error(`format ${name} would run on a backtracking engine`);

/** `$schema` values Amebo accepts, with or without the trailing `#`, http or https. */
const DRAFT07 = /^https?:\/\/json-schema\.org\/draft-07\/schema#?$/;
const DRAFT2020 = /^https?:\/\/json-schema\.org\/draft\/2020-12\/schema#?$/;

export interface Violation {
  instancePath: string;
  message: string;
  keyword: string;
  params: Record<string, unknown>;
}

function pick(schema: Record<string, unknown>): Ajv | Ajv2020 {
  const s = schema.$schema;
  if (s === undefined) return ajv2020;
  if (typeof s !== 'string')
    throw new AmeboError('SCHEMA_INVALID', '$schema must be a string', [{ instancePath: '/$schema' }]);
  if (DRAFT07.test(s)) return ajv07;
  if (DRAFT2020.test(s)) return ajv2020;
  throw new AmeboError(
    'SCHEMA_INVALID',
    `unsupported $schema ${JSON.stringify(s.slice(0, 200))}: use https://json-schema.org/draft/2020-12/schema or http://json-schema.org/draft-07/schema#`,
    [{ instancePath: '/$schema' }],
  );
}

/** Turns `schemata` as a client sends it (object, or a string holding one) into a schema object. */
export function normalizeSchema(input: unknown, maxBytes: number): Record<string, unknown> {
  let schema = input;
  if (typeof schema === 'string') {
    if (Buffer.byteLength(schema) > maxBytes)
      throw new AmeboError('SCHEMA_INVALID', `schema is larger than ${maxBytes} bytes`);
    try {
      schema = JSON.parse(schema);
    } catch {
      throw new AmeboError('SCHEMA_INVALID', 'schemata is a string that does not hold JSON');
    }
  }
  if (typeof schema === 'boolean') schema = schema ? {} : { not: {} };
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema))
    throw new AmeboError('SCHEMA_INVALID', 'schemata must be a JSON Schema object');
  const obj = { ...(schema as Record<string, unknown>) };
  if (obj.$schema === '') delete obj.$schema;
  // Depth first: JSON.stringify recurses and would overflow the stack on a hostile nesting.
  if (depth(obj, 33) > 32) throw new AmeboError('SCHEMA_INVALID', 'schema is nested more than 32 levels');
  if (JSON.stringify(obj).length > maxBytes)
    throw new AmeboError('SCHEMA_INVALID', `schema is larger than ${maxBytes} bytes`);
  return obj;
}

/** Compiles a schema, or throws SCHEMA_INVALID listing what is wrong with it. */
export function compileSchema(schema: Record<string, unknown>): ValidateFunction {
  const ajv = pick(schema);
  let valid: boolean;
  try {
    valid = ajv.validateSchema(schema) as boolean;
  } catch (err) {
    throw new AmeboError('SCHEMA_INVALID', `schema cannot be checked: ${(err as Error).message.slice(0, 300)}`);
  }
  if (!valid) throw new AmeboError('SCHEMA_INVALID', undefined, violations(ajv.errors ?? []));
  try {
    return ajv.compile(schema);
  } catch (err) {
    throw new AmeboError('SCHEMA_INVALID', `schema does not compile: ${(err as Error).message.slice(0, 400)}`);
  }
}

/**
 * A schema's validator as the source of a CommonJS module (ajv's standalone code): checked and
 * compiled like `compileSchema`, so it throws the same SCHEMA_INVALID. This is what the schema
 * compiler's worker thread produces (compiling is the slow part, seconds for some large schemas)
 * and `loadValidator` instantiates on the event loop.
 */
export function validatorSource(schema: Record<string, unknown>): string {
  const validate = compileSchema(schema);
  return standaloneCode(pick(schema), validate);
}

const runtimeRequire = createRequire(import.meta.url);

/**
 * Instantiates a validator from `validatorSource`'s code. The module may require only ajv's and
 * ajv-formats' runtime helpers and the two Amebo names the code was generated with.
 */
export function loadValidator(code: string): ValidateFunction {
  const need = (id: string): unknown => {
    if (id === 'amebo:formats') return FORMATS;
    if (id === 'amebo:linearRegExp') return linearRegExp;
    if (/^ajv(?:-formats)?\/dist\/[a-z0-9_/]+$/i.test(id)) return runtimeRequire(id);
    throw new Error(`a validator may not require ${JSON.stringify(id)}`);
  };
  const module = { exports: {} as { default?: ValidateFunction } };
  // The same code ajv's own compile() hands to new Function; ajv escapes every value of the schema.
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  new Function('require', 'module', 'exports', code)(need, module, module.exports);
  const fn = module.exports.default ?? (module.exports as unknown as ValidateFunction);
  if (typeof fn !== 'function') throw new Error('the validator module exports no function');
  return fn;
}

export function violations(errors: ErrorObject[]): Violation[] {
  return errors.map((e) => ({
    instancePath: e.instancePath,
    message: e.message ?? 'is invalid',
    keyword: e.keyword,
    params: e.params as Record<string, unknown>,
  }));
}

/** Nesting depth of a JSON value, without recursion (one implementation, shared with the fabric). */
export { depth };

// ---------------------------------------------------------------------------------------------
// Compatibility. BACKWARD: every payload the old schema accepts, the new one accepts too, so
// consumers reading with the new schema keep working on old events. The check is structural over
// the keywords events use in practice; anything it cannot prove is reported as a break.

export type Compatibility = 'BACKWARD' | 'FORWARD' | 'FULL' | 'NONE';

/** Most problems one check lists (the answer says when there were more). */
export const MAX_COMPATIBILITY_PROBLEMS = 100;

/**
 * Steps one check may take: 2 per byte of the two schemas (plus a floor). A walk over matching
 * positions takes well under that; only a subschema compared with many others (the old
 * `additionalProperties` with each of thousands of new properties, or each removed property with
 * the new one) could take more, and would be quadratic: two schemas inside AMEBO_MAX_SCHEMA_BYTES
 * once kept the event loop busy for 70 s that way.
 */
const STEPS_PER_BYTE = 2;

class CheckStopped extends Error {}

/** One compatibility check: its problems and what it may still spend. */
class Check {
  readonly problems = new Set<string>();
  private left: number;
  constructor(budget: number) {
    this.left = budget;
  }
  /** Charges `n` steps; stops the check once the budget is spent. */
  spend(n: number): void {
    if ((this.left -= n) < 0) throw new CheckStopped('budget');
  }
  push(problem: string): void {
    this.spend(1);
    this.problems.add(problem);
    if (this.problems.size > MAX_COMPATIBILITY_PROBLEMS) throw new CheckStopped('problems');
  }
  private readonly enums = new WeakMap<unknown[], Set<string>>();
  /** An enum's values as a set, built once per check (a shared subschema is compared many times). */
  enumSet(values: unknown[]): Set<string> {
    let set = this.enums.get(values);
    if (!set) {
      this.spend(values.length);
      set = new Set(values.map((x) => JSON.stringify(x)));
      this.enums.set(values, set);
    }
    return set;
  }
  /** JSON equality, charged by the size of what is compared. */
  same(a: unknown, b: unknown): boolean {
    if (a === b) return true;
    const x = JSON.stringify(a) ?? '';
    const y = JSON.stringify(b) ?? '';
    this.spend((x.length + y.length) >> 3);
    return x === y;
  }
}

/**
 * Each way the new schema breaks `mode` against the old one (at most MAX_COMPATIBILITY_PROBLEMS).
 * Linear in the size of the two schemas: past STEPS_PER_BYTE steps per byte the check stops and
 * reports that compatibility cannot be proven.
 */
export function compatibilityProblems(oldS: unknown, newS: unknown, mode: Compatibility): string[] {
  if (mode === 'NONE') return [];
  const bytes = (JSON.stringify(oldS) ?? '').length + (JSON.stringify(newS) ?? '').length;
  const c = new Check(STEPS_PER_BYTE * bytes + 10_000);
  try {
    if (mode === 'BACKWARD' || mode === 'FULL') widens(oldS, newS, '', c);
    if (mode === 'FORWARD' || mode === 'FULL') widens(newS, oldS, '', c);
  } catch (err) {
    if (!(err instanceof CheckStopped)) throw err;
    const out = [...c.problems].slice(0, MAX_COMPATIBILITY_PROBLEMS);
    if (err.message === 'problems')
      out.push(
        `more than ${MAX_COMPATIBILITY_PROBLEMS} problems: only the first ${MAX_COMPATIBILITY_PROBLEMS} are listed`,
      );
    else
      out.push(
        '/: the check stopped: comparing these schemas costs more than their size allows ' +
          '(a subschema compared with many others, such as additionalProperties with every property), ' +
          'so compatibility cannot be proven',
      );
    return out;
  }
  return [...c.problems];
}

const TYPES = ['string', 'number', 'integer', 'boolean', 'object', 'array', 'null'];
const typesOf = (s: Record<string, unknown>): Set<string> => {
  const t = s.type;
  if (t === undefined) return new Set(TYPES);
  const set = new Set(Array.isArray(t) ? (t as string[]) : [t as string]);
  if (set.has('number')) set.add('integer');
  return set;
};
const asObj = (s: unknown): Record<string, unknown> | null =>
  s === true || s === undefined ? {} : s === false ? null : (s as Record<string, unknown>);

const HANDLED = new Set([
  '$schema',
  '$id',
  'title',
  'description',
  'examples',
  'default',
  '$comment',
  'deprecated',
  'readOnly',
  'writeOnly',
  'type',
  'properties',
  'required',
  'additionalProperties',
  'enum',
  'const',
  'items',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'pattern',
  'format',
  'multipleOf',
  'uniqueItems',
  'minProperties',
  'maxProperties',
]);

/** Pushes a problem for each way `b` accepts less than `a`. */
function widens(aRaw: unknown, bRaw: unknown, path: string, c: Check): void {
  c.spend(1);
  const a = asObj(aRaw);
  const b = asObj(bRaw);
  const at = path || '/';
  if (a === null) return; // nothing was accepted before
  if (b === null) return void c.push(`${at}: the schema now rejects everything`);
  const ta = typesOf(a);
  const tb = typesOf(b);
  for (const t of ta) if (!tb.has(t)) c.push(`${at}: type "${t}" is no longer accepted`);
  if (Array.isArray(b.enum)) {
    // A set, not a list scan: a 40,000-value enum must not make the check quadratic.
    const bEnum = c.enumSet(b.enum as unknown[]);
    if (a.enum === undefined && a.const === undefined) c.push(`${at}: an enum was added`);
    else
      for (const v of Array.isArray(a.enum) ? (a.enum as unknown[]) : [a.const]) {
        c.spend(1);
        if (!bEnum.has(JSON.stringify(v))) c.push(`${at}: enum value ${JSON.stringify(v)} was removed`);
      }
  }
  if (b.const !== undefined && !c.same(a.const, b.const)) c.push(`${at}: const changed or was added`);
  const lower = (k: string): void => {
    if (b[k] !== undefined && (a[k] === undefined || (b[k] as number) > (a[k] as number)))
      c.push(`${at}: ${k} was added or raised`);
  };
  const upper = (k: string): void => {
    if (b[k] !== undefined && (a[k] === undefined || (b[k] as number) < (a[k] as number)))
      c.push(`${at}: ${k} was added or lowered`);
  };
  ['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties'].forEach(lower);
  ['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties'].forEach(upper);
  for (const k of ['pattern', 'format', 'multipleOf'])
    if (b[k] !== undefined && !c.same(a[k], b[k])) c.push(`${at}: ${k} was added or changed`);
  if (b.uniqueItems === true && a.uniqueItems !== true) c.push(`${at}: uniqueItems was added`);

  if (tb.has('object')) {
    const aRequired = (a.required as string[] | undefined) ?? [];
    const bRequired = (b.required as string[] | undefined) ?? [];
    c.spend(aRequired.length + bRequired.length);
    const aReq = new Set(aRequired);
    for (const r of bRequired) if (!aReq.has(r)) c.push(`${at}: property "${r}" became required`);
    const aProps = (a.properties as Record<string, unknown> | undefined) ?? {};
    const bProps = (b.properties as Record<string, unknown> | undefined) ?? {};
    c.spend(Object.keys(aProps).length + Object.keys(bProps).length);
    const aAdd = a.additionalProperties;
    const bAdd = b.additionalProperties;
    for (const [k, bs] of Object.entries(bProps)) {
      const ptr = `${path}/properties/${k}`;
      if (k in aProps) widens(aProps[k], bs, ptr, c);
      else if (aAdd === false)
        continue; // old payloads never carried it
      else if (aAdd !== undefined && aAdd !== true) widens(aAdd, bs, ptr, c);
      // A new optional property on an open model is accepted: old payloads are assumed not to use its name.
    }
    for (const [k, as] of Object.entries(aProps)) {
      if (k in bProps) continue;
      if (bAdd === false) c.push(`${at}: property "${k}" was removed from a closed object`);
      else if (bAdd !== undefined && bAdd !== true) widens(as, bAdd, `${path}/properties/${k}`, c);
    }
    if (bAdd === false && aAdd !== false) c.push(`${at}: additionalProperties was closed`);
    else if (bAdd !== undefined && bAdd !== true && bAdd !== false && aAdd !== false)
      widens(aAdd, bAdd, `${path}/additionalProperties`, c);
  }
  if (tb.has('array') && (a.items !== undefined || b.items !== undefined)) {
    if (Array.isArray(a.items) || Array.isArray(b.items)) {
      if (!c.same(a.items, b.items)) c.push(`${at}: tuple items changed`);
    } else widens(a.items, b.items, `${path}/items`, c);
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  c.spend(keys.size);
  for (const k of keys) {
    if (HANDLED.has(k)) continue;
    if (!c.same(a[k], b[k])) c.push(`${at}: keyword "${k}" changed and its compatibility cannot be proven`);
  }
}

import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { AmeboError } from './errors.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv | Ajv2020) => void;

// Users' schemas are untrusted and many: never register them by $id (two actions may share one),
// collect every violation, tolerate unknown keywords.
const common = { allErrors: true, strict: false, addUsedSchema: false, validateFormats: true } as const;
const ajv2020 = new Ajv2020(common);
const ajv07 = new Ajv(common);
addFormats(ajv2020);
addFormats(ajv07);

const DRAFT07 = /json-schema\.org\/draft-0[67]\/schema/;

export interface Violation {
  instancePath: string;
  message: string;
  keyword: string;
  params: Record<string, unknown>;
}

function pick(schema: Record<string, unknown>): Ajv | Ajv2020 {
  return typeof schema.$schema === 'string' && DRAFT07.test(schema.$schema) ? ajv07 : ajv2020;
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
  if (JSON.stringify(obj).length > maxBytes)
    throw new AmeboError('SCHEMA_INVALID', `schema is larger than ${maxBytes} bytes`);
  if (depth(obj) > 32) throw new AmeboError('SCHEMA_INVALID', 'schema is nested more than 32 levels');
  return obj;
}

/** Compiles a schema, or throws SCHEMA_INVALID listing what is wrong with it. */
export function compileSchema(schema: Record<string, unknown>): ValidateFunction {
  const ajv = pick(schema);
  if (
    typeof schema.$schema === 'string' &&
    !DRAFT07.test(schema.$schema) &&
    !/draft\/2020-12\/schema/.test(schema.$schema)
  )
    throw new AmeboError('SCHEMA_INVALID', `unsupported $schema "${schema.$schema}" (use draft 2020-12 or draft-07)`);
  if (!ajv.validateSchema(schema)) {
    throw new AmeboError('SCHEMA_INVALID', undefined, violations(ajv.errors ?? []));
  }
  try {
    return ajv.compile(schema);
  } catch (err) {
    throw new AmeboError('SCHEMA_INVALID', `schema does not compile: ${(err as Error).message}`);
  }
}

export function violations(errors: ErrorObject[]): Violation[] {
  return errors.map((e) => ({
    instancePath: e.instancePath,
    message: e.message ?? 'is invalid',
    keyword: e.keyword,
    params: e.params as Record<string, unknown>,
  }));
}

/** Nesting depth of a JSON value, without recursion (payloads may be hostile). */
export function depth(value: unknown, limit = Infinity): number {
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

// ---------------------------------------------------------------------------------------------
// Compatibility. BACKWARD: every payload the old schema accepts, the new one accepts too, so
// consumers reading with the new schema keep working on old events. The check is structural over
// the keywords events use in practice; anything it cannot prove is reported as a break.

export type Compatibility = 'BACKWARD' | 'FORWARD' | 'FULL' | 'NONE';

export function compatibilityProblems(oldS: unknown, newS: unknown, mode: Compatibility): string[] {
  if (mode === 'NONE') return [];
  const out: string[] = [];
  if (mode === 'BACKWARD' || mode === 'FULL') widens(oldS, newS, '', out);
  if (mode === 'FORWARD' || mode === 'FULL') widens(newS, oldS, '', out);
  return [...new Set(out)];
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
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

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
function widens(aRaw: unknown, bRaw: unknown, path: string, out: string[]): void {
  const a = asObj(aRaw);
  const b = asObj(bRaw);
  const at = path || '/';
  if (a === null) return; // nothing was accepted before
  if (b === null) return void out.push(`${at}: the schema now rejects everything`);
  const ta = typesOf(a);
  const tb = typesOf(b);
  for (const t of ta) if (!tb.has(t)) out.push(`${at}: type "${t}" is no longer accepted`);
  if (b.enum !== undefined) {
    const bEnum = (b.enum as unknown[]).map((x) => JSON.stringify(x));
    if (a.enum === undefined && a.const === undefined) out.push(`${at}: an enum was added`);
    else
      for (const v of (a.enum as unknown[] | undefined) ?? [a.const])
        if (!bEnum.includes(JSON.stringify(v))) out.push(`${at}: enum value ${JSON.stringify(v)} was removed`);
  }
  if (b.const !== undefined && !same(a.const, b.const)) out.push(`${at}: const changed or was added`);
  const lower = (k: string): void => {
    if (b[k] !== undefined && (a[k] === undefined || (b[k] as number) > (a[k] as number)))
      out.push(`${at}: ${k} was added or raised`);
  };
  const upper = (k: string): void => {
    if (b[k] !== undefined && (a[k] === undefined || (b[k] as number) < (a[k] as number)))
      out.push(`${at}: ${k} was added or lowered`);
  };
  ['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties'].forEach(lower);
  ['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties'].forEach(upper);
  for (const k of ['pattern', 'format', 'multipleOf'])
    if (b[k] !== undefined && !same(a[k], b[k])) out.push(`${at}: ${k} was added or changed`);
  if (b.uniqueItems === true && a.uniqueItems !== true) out.push(`${at}: uniqueItems was added`);

  if (tb.has('object')) {
    const aReq = new Set((a.required as string[] | undefined) ?? []);
    for (const r of (b.required as string[] | undefined) ?? [])
      if (!aReq.has(r)) out.push(`${at}: property "${r}" became required`);
    const aProps = (a.properties as Record<string, unknown> | undefined) ?? {};
    const bProps = (b.properties as Record<string, unknown> | undefined) ?? {};
    const aAdd = a.additionalProperties;
    const bAdd = b.additionalProperties;
    for (const [k, bs] of Object.entries(bProps)) {
      const ptr = `${path}/properties/${k}`;
      if (k in aProps) widens(aProps[k], bs, ptr, out);
      else if (aAdd === false)
        continue; // old payloads never carried it
      else if (aAdd !== undefined && aAdd !== true) widens(aAdd, bs, ptr, out);
      // A new optional property on an open model is accepted: old payloads are assumed not to use its name.
    }
    for (const [k, as] of Object.entries(aProps)) {
      if (k in bProps) continue;
      if (bAdd === false) out.push(`${at}: property "${k}" was removed from a closed object`);
      else if (bAdd !== undefined && bAdd !== true) widens(as, bAdd, `${path}/properties/${k}`, out);
    }
    if (bAdd === false && aAdd !== false) out.push(`${at}: additionalProperties was closed`);
    else if (bAdd !== undefined && bAdd !== true && bAdd !== false && aAdd !== false)
      widens(aAdd, bAdd, `${path}/additionalProperties`, out);
  }
  if (tb.has('array') && (a.items !== undefined || b.items !== undefined)) {
    if (Array.isArray(a.items) || Array.isArray(b.items)) {
      if (!same(a.items, b.items)) out.push(`${at}: tuple items changed`);
    } else widens(a.items, b.items, `${path}/items`, out);
  }
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (HANDLED.has(k)) continue;
    if (!same(a[k], b[k])) out.push(`${at}: keyword "${k}" changed and its compatibility cannot be proven`);
  }
}

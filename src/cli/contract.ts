/**
 * The one contract of every `amebo` command:
 * - exit 0 done; 1 Amebo (or the called service) answered an error; 2 bad usage (missing or
 *   malformed arguments, options that need each other); 3 Amebo, the broker or a store unreachable
 *   or too slow;
 * - never a stack trace: an unexpected error prints one line and the file its details went to;
 * - with `--json`, results and errors go to stdout as JSON (one line); without, results to stdout
 *   and errors to stderr, for people;
 * - one duration syntax for every timeout: `500ms`, `10s`, `2m` (a bare number is seconds).
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { styleText } from 'node:util';

export const EXIT = { ok: 0, answered: 1, usage: 2, unreachable: 3 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Ends a command with `exit`, printing `message` (and `details`) as an error. */
export class CliError extends Error {
  override name = 'CliError';
  readonly exit: ExitCode;
  /** Machine-readable error code (Amebo's, or the CLI's own). */
  readonly code: string;
  readonly details: unknown;
  /** Extra lines for people (e.g. each invalid field). */
  readonly lines: string[];
  constructor(exit: ExitCode, code: string, message: string, opts: { details?: unknown; lines?: string[] } = {}) {
    super(message);
    this.exit = exit;
    this.code = code;
    this.details = opts.details;
    this.lines = opts.lines ?? [];
  }
}

export const usage = (message: string): CliError => new CliError(EXIT.usage, 'USAGE', message);
export const unreachable = (what: string, cause: string): CliError =>
  new CliError(EXIT.unreachable, 'UNREACHABLE', `cannot reach ${what}: ${cause}`);

/** `500ms`, `5s`, `2m`, `1h`; a bare number is seconds. Throws a usage error naming the option. */
export function parseDuration(s: string, option = 'duration'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw usage(`${option}: invalid duration ${JSON.stringify(s)} (use e.g. 500ms, 10s, 2m)`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's']!;
  const ms = Math.round(n * unit);
  if (ms < 1) throw usage(`${option}: duration ${JSON.stringify(s)} is too short`);
  if (ms > 7 * 86_400_000) throw usage(`${option}: duration ${JSON.stringify(s)} is longer than a week`);
  return ms;
}

/** A positive integer option, or undefined when absent. */
export function positiveInt(v: string | boolean | undefined, option: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isInteger(n) || n < 1)
    throw usage(`${option} must be a positive integer, not ${JSON.stringify(v)}`);
  return n;
}

/** Writes and waits for the write (so `process.exit` after it loses nothing on a pipe). */
export function write(stream: NodeJS.WriteStream, s: string): Promise<void> {
  return new Promise((r) => stream.write(s, () => r()));
}
export const out = (s: string): Promise<void> => write(process.stdout, s.endsWith('\n') ? s : `${s}\n`);
export const err = (s: string): Promise<void> => write(process.stderr, s.endsWith('\n') ? s : `${s}\n`);

/** Colour only on a terminal (and not under NO_COLOR: styleText checks it). */
export const paint = (
  style: Parameters<typeof styleText>[0],
  s: string,
  stream: NodeJS.WriteStream = process.stdout,
): string => (stream.isTTY ? styleText(style, s) : s);

/** One line per invalid field of an Amebo error's `details` (ajv-style violations). */
export function fieldLines(details: unknown): string[] {
  if (!Array.isArray(details)) return [];
  return details.flatMap((d: unknown) => {
    if (!d || typeof d !== 'object') return [];
    const v = d as { instancePath?: string; message?: string; keyword?: string };
    const where = v.instancePath || '/';
    return [`  ${where}: ${v.message ?? v.keyword ?? 'invalid'}`];
  });
}

/** Amebo answered `status` with its error body: exit 1, with each invalid field listed. */
export function answered(status: number, body: unknown): CliError {
  const e = (body as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
  const message = e?.message ?? (typeof body === 'string' ? body.slice(0, 300) : JSON.stringify(body));
  return new CliError(EXIT.answered, e?.code ?? `HTTP_${status}`, `${status} ${e?.code ?? ''}: ${message}`, {
    details: e?.details,
    lines: fieldLines(e?.details),
  });
}

/** Where an unexpected error's details go: a file, named in the one line printed. */
function logUnexpected(e: unknown): string {
  const dir = path.join(tmpdir(), 'amebo-cli');
  const file = path.join(dir, `error-${new Date().toISOString().slice(0, 10)}.log`);
  try {
    mkdirSync(dir, { recursive: true });
    appendFileSync(
      file,
      `${new Date().toISOString()} amebo ${process.argv.slice(2).join(' ')}\n${(e as Error)?.stack ?? String(e)}\n\n`,
    );
    return file;
  } catch {
    return '(could not write the log)';
  }
}

/** Prints `e` per the contract (JSON on stdout with --json) and exits with its code. */
export async function fail(e: unknown, json = false): Promise<never> {
  let ce: CliError;
  if (e instanceof CliError) ce = e;
  else {
    const file = logUnexpected(e);
    ce = new CliError(
      EXIT.answered,
      'UNEXPECTED',
      `unexpected error: ${String((e as Error)?.message ?? e).split('\n')[0]} (details in ${file})`,
    );
  }
  if (json)
    await out(
      JSON.stringify({
        error: { code: ce.code, message: ce.message, ...(ce.details !== undefined ? { details: ce.details } : {}) },
      }),
    );
  else await err([`${paint('red', 'amebo:', process.stderr)} ${ce.message}`, ...ce.lines].join('\n'));
  process.exit(ce.exit);
}

/**
 * Wraps a command's action: whatever it throws ends per the contract. `json` tells whether the
 * command was given --json (read from its options, the last argument commander passes).
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const opts = args.find((a, i) => i === args.length - 2 && a && typeof a === 'object') as
      { json?: boolean } | undefined;
    try {
      await fn(...args);
    } catch (e) {
      await fail(e, Boolean(opts?.json));
    }
  };
}

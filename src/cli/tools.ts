import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { request } from 'undici';
import { loadConfig, type Config } from '../config.js';
import { action, answered, out, paint, parseDuration, unreachable, usage } from './contract.js';

interface ToolDeps {
  adminToken: (cfg: Config) => string | undefined;
}

/** Where a running Amebo answers: `AMEBO_URL` (a trailing slash is fine), else the configured address (0.0.0.0 → loopback). */
export function baseUrl(cfg: Config): string {
  return (cfg.url || `http://${cfg.address.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}`).replace(/\/+$/, '');
}

export interface Reply {
  status: number;
  body: any;
}

/**
 * Talks to a running Amebo over its HTTP API, with a timeout; returns status and JSON body.
 * Unreachable or too slow: a CliError with exit 3.
 */
export async function api(
  cfg: Config,
  method: 'GET' | 'POST',
  path: string,
  body: unknown,
  auth: string | undefined,
  timeoutMs = 10_000,
  headers: Record<string, string> = {},
): Promise<Reply> {
  let res: Awaited<ReturnType<typeof request>>;
  let text: string;
  try {
    res = await request(baseUrl(cfg) + path, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(auth ? { authorization: auth } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs + 1000),
    });
    text = await res.body.text();
  } catch (e) {
    throw unreachable(`Amebo at ${baseUrl(cfg)}`, (e as Error).message);
  }
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.statusCode, body: parsed };
}

/** Like `api`, but an answer other than 2xx is a CliError (exit 1) with Amebo's code and each invalid field. */
export async function apiOk(...args: Parameters<typeof api>): Promise<any> {
  const r = await api(...args);
  if (r.status >= 300) throw answered(r.status, r.body);
  return r.body;
}

/** A JSON payload argument: JSON text, or @file with JSON in it. */
async function payloadOf(arg: string | undefined): Promise<unknown> {
  let text = arg ?? '{}';
  if (arg?.startsWith('@')) {
    try {
      text = await readFile(arg.slice(1), 'utf8');
    } catch (e) {
      throw usage(
        `cannot read the payload file ${arg.slice(1)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw usage(`the payload is not valid JSON: ${(e as Error).message}`);
  }
}

export function registerTools(program: Command, deps: ToolDeps): void {
  program
    .command('publish <action> [payload]')
    .description('publish an event over the HTTP API; payload is JSON text or @file.json (default {})')
    .option('--application <name>', 'publish as this application (needs --secret; else the admin token is used)')
    .option('--secret <secret>', 'the application secret (with --application)')
    .option('--deduper <key>', 'idempotency key')
    .option('--deliver-at <time>', 'RFC 3339 time to deliver at')
    .option('--json', 'print the reply (or the error) as one line of JSON')
    .option('--timeout <duration>', 'request timeout (500ms, 10s, 2m)', '10s')
    .action(
      action(
        async (actionName: string, payloadArg: string | undefined, o: Record<string, string | boolean | undefined>) => {
          const cfg = loadConfig();
          const timeoutMs = parseDuration(String(o.timeout), '--timeout');
          if (Boolean(o.application) !== Boolean(o.secret))
            throw usage('--application and --secret go together (without both, the admin token is used)');
          const payload = await payloadOf(payloadArg);
          const token = deps.adminToken(cfg);
          const auth = o.application
            ? `Basic ${Buffer.from(`${o.application as string}:${o.secret as string}`).toString('base64')}`
            : token
              ? `Bearer ${token}`
              : undefined;
          if (!auth)
            throw usage(
              'no credentials: give --application and --secret, or set AMEBO_ADMIN_TOKEN (or run where `amebo serve` saved .amebo/admin-token)',
            );
          const body = await apiOk(
            cfg,
            'POST',
            '/v1/events',
            { action: actionName, payload, deduper: o.deduper, deliver_at: o.deliverAt },
            auth,
            timeoutMs,
            // A person at a terminal wants to know the broker has it: the reply waits for the confirm.
            { prefer: `wait=${Math.max(1, Math.floor(timeoutMs / 1000))}` },
          );
          if (o.json) await out(JSON.stringify(body));
          else
            await out(
              `${paint('green', body.duplicate ? 'duplicate' : 'accepted')} ${body.event}${body.published ? '' : ' (not yet confirmed by the broker; the relay will publish it)'}`,
            );
        },
      ),
    );
}

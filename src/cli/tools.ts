import { readFile } from 'node:fs/promises';
import { styleText } from 'node:util';
import type { Command } from 'commander';
import { request } from 'undici';
import { loadConfig, type Config } from '../config.js';

interface ToolDeps {
  adminToken: (cfg: Config) => string | undefined;
  die: (err: unknown) => never;
}

/** Where a running Amebo answers: `AMEBO_URL`, else the configured address (0.0.0.0 → loopback). */
export function baseUrl(cfg: Config): string {
  return cfg.url || `http://${cfg.address.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}`;
}

/** Talks to a running Amebo over its HTTP API, with a timeout; returns status and JSON body. */
export async function api(
  cfg: Config,
  method: 'GET' | 'POST',
  path: string,
  body: unknown,
  auth: string | undefined,
  timeoutMs = 10_000,
): Promise<{ status: number; body: any }> {
  const res = await request(baseUrl(cfg) + path, {
    method,
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.statusCode, body: parsed };
}

export function registerTools(program: Command, deps: ToolDeps): void {
  program
    .command('publish <action> [payload]')
    .description('publish an event over the HTTP API; payload is JSON text or @file.json (default {})')
    .option('--application <name>', 'application (with --secret)')
    .option('--secret <secret>', 'application secret (else the admin token is used)')
    .option('--deduper <key>', 'idempotency key')
    .option('--deliver-at <time>', 'RFC 3339 time to deliver at')
    .option('--json', 'print the raw JSON reply')
    .option('--timeout <ms>', 'request timeout', '10000')
    .action(async (action: string, payloadArg: string | undefined, o: Record<string, string | boolean | undefined>) => {
      try {
        const cfg = loadConfig();
        const text = payloadArg?.startsWith('@') ? await readFile(payloadArg.slice(1), 'utf8') : (payloadArg ?? '{}');
        let payload: unknown;
        try {
          payload = JSON.parse(text);
        } catch {
          process.stderr.write('amebo: payload is not valid JSON\n');
          process.exit(2);
        }
        const auth =
          o.secret && o.application
            ? `Basic ${Buffer.from(`${o.application as string}:${o.secret as string}`).toString('base64')}`
            : deps.adminToken(cfg)
              ? `Bearer ${deps.adminToken(cfg)}`
              : undefined;
        const res = await api(
          cfg,
          'POST',
          '/v1/events',
          { action, payload, deduper: o.deduper, deliver_at: o.deliverAt },
          auth,
          Number(o.timeout),
        );
        if (o.json) process.stdout.write(JSON.stringify(res.body) + '\n');
        else if (res.status < 300)
          process.stdout.write(
            `${styleText('green', res.body.duplicate ? 'duplicate' : 'accepted')} ${res.body.event}${res.body.published ? '' : ' (not yet confirmed by the broker; the relay will publish it)'}\n`,
          );
        else
          process.stderr.write(
            `${styleText('red', String(res.status))} ${res.body?.error?.code}: ${res.body?.error?.message}\n`,
          );
        process.exit(res.status < 300 ? 0 : 1);
      } catch (err) {
        deps.die(err);
      }
    });
}

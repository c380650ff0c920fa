/**
 * Operator tools over a running Amebo's HTTP API (admin token): `monitor` (live tail), `inspect`
 * (an event with each subscription's delivery state, or a subscription with its queues),
 * `dead-letters`, `resurrect` and `replay`. Unlike async_service's tools they never touch a queue
 * directly (listing dead letters does not redeliver anything twice, resurrect confirms before it
 * acks: the server does both), every call has a timeout, and `--count` larger than what exists
 * ends instead of hanging.
 *
 * Exit codes and output follow the CLI contract (./contract.ts); the stream ending early is 1.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { styleText } from 'node:util';
import type { Command } from 'commander';
import WebSocket from 'ws';
import { loadConfig, type Config } from '../config.js';
import { action, CliError, EXIT, fail, parseDuration, positiveInt, unreachable, usage } from './contract.js';
import { apiOk, baseUrl } from './tools.js';

interface OpsDeps {
  adminToken: (cfg: Config) => string | undefined;
}

type Flags = Record<string, string | boolean | undefined>;

/** Lines for people (results go to stdout; a failure is thrown and printed by the contract). */
const out = (s: string): boolean => process.stdout.write(s + '\n');

function requireToken(deps: OpsDeps, cfg: Config): string {
  const token = deps.adminToken(cfg);
  if (token) return token;
  throw usage('no admin token (set AMEBO_ADMIN_TOKEN, or run where `amebo serve` saved .amebo/admin-token)');
}

/** One admin call: Amebo's error is a CliError (exit 1), unreachable exit 3. */
async function admin(
  deps: OpsDeps,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<any> {
  const cfg = loadConfig();
  return apiOk(cfg, method, path, body, `Bearer ${requireToken(deps, cfg)}`, timeoutMs);
}

const short = (s: unknown, n = 120): string => {
  const t = typeof s === 'string' ? s : JSON.stringify(s);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
};

const STATE_COLOUR: Record<string, Parameters<typeof styleText>[0]> = {
  delivered: 'green',
  pending: 'yellow',
  retrying: 'yellow',
  in_flight: 'yellow',
  scheduled: 'yellow',
  paused: 'yellow',
  circuit_open: 'red',
  not_routed: 'gray',
  filtered: 'gray',
  native: 'cyan',
  dead: 'red',
  up: 'green',
  down: 'red',
};

/** `--save`: one file per message, numbered in arrival order, named by type and id. */
function saveMessage(dir: string, n: number, m: Record<string, any>): void {
  const id = String(m.event?.id ?? m.event ?? m.fqn ?? '')
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 100);
  const name = `${String(n).padStart(6, '0')}-${String(m.type).replace(/[^a-z]/g, '')}${id ? `-${id}` : ''}.json`;
  writeFileSync(path.join(dir, name), JSON.stringify(m, null, 2) + '\n');
}

const percent = (r: number | null | undefined): string =>
  typeof r === 'number' ? `${Math.round(r * 1000) / 10}%` : '-';
const ms = (v: number | null | undefined): string => (typeof v === 'number' ? `${Math.round(v)} ms` : '-');

function stateText(state: string, reason?: string | null): string {
  const colour = state === 'active' ? 'green' : state === 'paused' ? 'yellow' : 'red';
  return styleText(colour, state === 'disabled' && reason ? `disabled (${reason})` : state);
}

/** One line per stream message, for people. */
export function describeStreamMessage(m: Record<string, any>): string | null {
  const at = new Date().toISOString().slice(11, 23);
  switch (m.type) {
    case 'event': {
      const e = (m.event ?? {}) as Record<string, unknown>;
      return `${at} ${styleText('cyan', 'event')}    ${String(e.action)} ${String(e.id)} ${short(e.payload)}`;
    }
    case 'delivery':
      return `${at} ${styleText('magenta', 'delivery')} ${m.application}/${m.subscription_name} ${m.event} ${styleText(
        STATE_COLOUR[m.state] ?? 'white',
        String(m.state),
      )} attempt ${m.attempt ?? '?'}${m.status ? ` → ${m.status}` : ''}${m.error ? ` (${short(m.error, 80)})` : ''}`;
    case 'service':
      return `${at} ${styleText('blue', 'service')}  ${m.fqn} ${styleText(STATE_COLOUR[m.status] ?? 'white', String(m.status))}${
        m.previous ? ` (was ${m.previous})` : ''
      }${m.version ? ` v${m.version}` : ''}`;
    case 'hello':
      return null;
    default:
      return `${at} ${short(m, 200)}`;
  }
}

export function registerOpsCommands(program: Command, deps: OpsDeps): void {
  program
    .command('monitor [patterns...]')
    .description('live tail of events, delivery outcomes and service changes (patterns: user.*, order.#)')
    .option('--json', 'one JSON message per line')
    .option('--count <n>', 'exit after n messages')
    .option('--save <dir>', 'also write each message to its own JSON file in this folder (created if missing)')
    .option('--timeout <duration>', 'give up connecting after this long (500ms, 10s, 2m)', '10s')
    .action(
      action(async (patterns: string[], o: Flags) => {
        const count = positiveInt(o.count, '--count');
        const save = typeof o.save === 'string' ? o.save : null;
        if (save)
          try {
            mkdirSync(save, { recursive: true });
          } catch (e) {
            throw usage(`--save: cannot create ${save}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
          }
        const handshakeTimeout = parseDuration(String(o.timeout), '--timeout');
        const cfg = loadConfig();
        const token = requireToken(deps, cfg);
        const q = new URLSearchParams();
        if (patterns.length) q.set('actions', patterns.join(','));
        const url = `${baseUrl(cfg).replace(/^http/, 'ws')}/v1/stream?${q.toString()}`;
        // The token goes in a header, never in the URL (proxies and logs keep URLs).
        const ws = new WebSocket(url, { handshakeTimeout, headers: { authorization: `Bearer ${token}` } });
        let seen = 0;
        let saved = 0;
        let done = false;
        const finish = (code: number): void => {
          done = true;
          ws.terminate();
          process.exit(code);
        };
        const failWith = (e: CliError): void => {
          if (done) return;
          done = true;
          ws.terminate();
          void fail(e, Boolean(o.json));
        };
        ws.on('unexpected-response', (_req, res) => {
          const code = res.statusCode ?? 0;
          failWith(
            new CliError(
              code === 400 ? EXIT.usage : EXIT.answered,
              `HTTP_${code}`,
              `the stream was refused: ${code}${code === 401 ? ' (admin token?)' : ''}`,
            ),
          );
        });
        ws.on('error', (e: Error) => failWith(unreachable(`Amebo at ${url}`, e.message)));
        ws.on('message', (data: WebSocket.RawData) => {
          let m: Record<string, any>;
          try {
            const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Uint8Array);
            m = JSON.parse(buf.toString('utf8')) as Record<string, any>;
          } catch {
            return;
          }
          if (m.type === 'hello') {
            // From here on nothing published is missed (said on stderr, so --json's stdout stays JSON).
            process.stderr.write(
              styleText('dim', `monitoring ${patterns.length ? patterns.join(', ') : 'everything'} (Ctrl-C to stop)\n`),
            );
            return;
          }
          if (save) saveMessage(save, ++saved, m);
          if (o.json) out(JSON.stringify(m));
          else {
            const line = describeStreamMessage(m);
            if (line) out(line);
          }
          if (count && ++seen >= count) finish(0);
        });
        ws.on('close', () =>
          failWith(new CliError(EXIT.answered, 'STREAM_CLOSED', 'the stream was closed by the server')),
        );
        process.on('SIGINT', () => finish(0));
        await new Promise(() => undefined); // runs until a message count, an error or Ctrl-C ends it
      }),
    );

  const inspect = program.command('inspect').description('look at an event or a subscription');
  inspect
    .command('event <id>')
    .description(
      'an event, with the delivery state of every subscription it matches (and, with --attempts, every attempt)',
    )
    .option('--attempts', 'list the attempts of every delivery')
    .option('--json', 'print JSON')
    .action(
      action(async (id: string, o: Flags) => {
        const e = await admin(deps, 'GET', `/v1/events/${encodeURIComponent(id)}`);
        const attempts: Record<string, unknown[]> = {};
        if (o.attempts)
          for (const d of e.deliveries as { subscription: string; attempts: number }[])
            if (d.attempts > 0)
              attempts[d.subscription] = (
                await admin(deps, 'GET', `/v1/deliveries/${encodeURIComponent(id)}/${d.subscription}/attempts`)
              ).items;
        if (o.json) {
          out(JSON.stringify(o.attempts ? { ...e, attempts } : e));
          return;
        }
        out(`${styleText('bold', e.action)} ${e.id}  from ${e.application}  at ${e.created_at}`);
        out(
          `  published: ${e.published ? 'yes' : 'not yet (the relay will)'}${e.deduper ? `  deduper: ${e.deduper}` : ''}`,
        );
        out(`  payload: ${short(e.payload, 400)}`);
        if (!e.deliveries.length) out('  no subscription matches this action');
        for (const d of e.deliveries as Record<string, any>[]) {
          const when =
            d.state === 'circuit_open' && d.next_probe_at
              ? `, next probe at ${d.next_probe_at}`
              : d.next_attempt_at && ['retrying', 'in_flight', 'scheduled'].includes(d.state)
                ? `, next at ${d.next_attempt_at}`
                : '';
          out(
            `  → ${d.application}/${d.subscription_name} ${styleText(STATE_COLOUR[d.state] ?? 'white', d.state)}` +
              `${d.attempts ? ` after ${d.attempts} attempt(s)` : ''}${d.last_status ? `, last ${d.last_status}` : ''}` +
              `${when}${typeof d.backlog === 'number' ? `, ${d.backlog} in its queue` : ''}`,
          );
          out(`      ${short(d.reason, 160)}`);
          for (const a of (attempts[d.subscription] ?? []) as Record<string, any>[])
            out(
              `      #${a.attempt} ${a.created_at} ${a.status ?? a.error_class ?? ''} ${a.latency_ms ?? '?'} ms${a.error ? ` ${short(a.error, 80)}` : ''}`,
            );
        }
      }),
    );
  inspect
    .command('subscription <subscription>')
    .description(
      'a subscription (id or application/subscription): settings, health over a window, and with --pending the events waiting for it',
    )
    .option('--window <window>', 'health window: 5m, 1h or 24h', '1h')
    .option('--pending', 'list the events waiting for it, oldest first (from the event log: its queue is not touched)')
    .option('--count <n>', 'with --pending: at most n', '20')
    .option('--save <dir>', 'with --pending: write each waiting event to its own JSON file in this folder')
    .option('--json', 'print JSON')
    .action(
      action(async (ref: string, o: Flags) => {
        if (!['5m', '1h', '24h'].includes(String(o.window))) throw usage('--window must be 5m, 1h or 24h');
        const count = positiveInt(o.count, '--count')!;
        const path0 = `/v1/subscriptions/${encodeURIComponent(ref)}`;
        const s = await admin(deps, 'GET', path0);
        const h = await admin(deps, 'GET', `${path0}/health?window=${String(o.window)}`);
        const pending = o.pending ? (await admin(deps, 'GET', `${path0}/pending?limit=${count}`)).items : undefined;
        if (pending && typeof o.save === 'string') {
          try {
            mkdirSync(o.save, { recursive: true });
          } catch (e) {
            throw usage(
              `--save: cannot create ${o.save}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
            );
          }
          pending.forEach((e: Record<string, any>, i: number) =>
            writeFileSync(
              path.join(o.save as string, `${String(i + 1).padStart(6, '0')}-${String(e.id)}.json`),
              JSON.stringify(e, null, 2) + '\n',
            ),
          );
        }
        if (o.json) {
          out(JSON.stringify({ ...s, health: h, ...(pending ? { pending } : {}) }));
          return;
        }
        out(
          `${styleText('bold', `${s.application}/${s.subscription}`)} ${s.id}  ${s.transport}  ${stateText(h.state, h.disabled_reason)}`,
        );
        out(`  action: ${s.action}${s.ordered ? '  ordered' : ''}${s.rate_limit ? `  ${s.rate_limit}/s` : ''}`);
        if (s.handler) out(`  handler: ${s.handler}`);
        out(`  queue: ${s.queue}  dead letters: ${s.dead_letter_queue}`);
        out(`  retry: ${JSON.stringify(s.retry_schedule)} s, at most ${s.max_attempts} attempts, ${s.max_age} s old`);
        out(`  backlog: ${h.backlog ?? '?'}  retrying: ${h.retrying}  consumers: ${h.consumers ?? '?'}`);
        out(`  dead letters waiting: ${h.dead ?? '?'}`);
        if (h.breaker.state !== 'none')
          out(
            `  breaker: ${h.breaker.state}${h.breaker.next_probe_at && h.breaker.state !== 'closed' ? `, next probe at ${h.breaker.next_probe_at}` : ''}` +
              `${h.breaker.failures ? `, ${h.breaker.failures} recent failure(s)` : ''}`,
          );
        out(
          `  last ${h.window}: ${h.attempts} attempt(s), success ${percent(h.success_rate)}, p50 ${ms(h.latency_ms.p50)}, p99 ${ms(h.latency_ms.p99)}`,
        );
        if (h.last_success_at) out(`  last success: ${h.last_success_at}`);
        if (h.last_failure_at) out(`  last failure: ${h.last_failure_at} (${short(h.last_error ?? '', 100)})`);
        if (pending) {
          out(`  pending (oldest first${pending.length === count ? `, the first ${count}` : ''}):`);
          if (!pending.length) out('    nothing waits');
          for (const e of pending as Record<string, any>[])
            out(
              `    ${e.id} ${e.action} ${e.created_at} ${e.state}${e.attempts ? ` after ${e.attempts} attempt(s)` : ''} ${short(e.payload, 80)}`,
            );
        }
      }),
    );

  program
    .command('subscriptions')
    .description('list subscriptions with their state, backlog and success rate (the last hour)')
    .option('--application <name>', 'only this application’s')
    .option('--json', 'print JSON')
    .action(
      action(async (o: Flags) => {
        const q = typeof o.application === 'string' ? `?application=${encodeURIComponent(o.application)}` : '';
        const subs = (await admin(deps, 'GET', `/v1/subscriptions${q}`)).items as Record<string, any>[];
        const rows: Record<string, any>[] = [];
        // A few health calls at a time: each asks the broker for two queue depths.
        for (let i = 0; i < subs.length; i += 8)
          rows.push(
            ...(await Promise.all(
              subs.slice(i, i + 8).map(async (s) => ({
                ...s,
                health: await admin(deps, 'GET', `/v1/subscriptions/${s.id}/health?window=1h`),
              })),
            )),
          );
        if (o.json) {
          out(JSON.stringify(rows));
          return;
        }
        if (!rows.length) {
          out('no subscriptions (create one with POST /v1/subscriptions)');
          return;
        }
        const table = rows.map((r) => [
          `${r.application}/${r.subscription}`,
          r.health.state as string,
          String(r.health.backlog ?? '?'),
          percent(r.health.success_rate),
          r.action as string,
          r.id as string,
        ]);
        const head = ['SUBSCRIPTION', 'STATE', 'BACKLOG', 'SUCCESS', 'ACTION', 'ID'];
        const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
        const line = (cells: string[]) =>
          cells
            .map((c, i) => c.padEnd(widths[i]!))
            .join('  ')
            .trimEnd();
        out(line(head));
        for (const t of table) out(line(t));
      }),
    );

  program
    .command('dead-letters <subscription>')
    .description("a subscription's dead letters, oldest first (they stay where they are)")
    .option('--limit <n>', 'at most n', '20')
    .option('--json', 'print JSON')
    .action(
      action(async (sub: string, o: Flags) => {
        const limit = positiveInt(o.limit, '--limit');
        const r = await admin(deps, 'GET', `/v1/subscriptions/${encodeURIComponent(sub)}/dead-letters?limit=${limit}`);
        if (o.json) {
          out(JSON.stringify(r));
          return;
        }
        out(
          `${r.count} dead letter(s)${r.items.length < r.count ? `, the first ${r.items.length}:` : r.count ? ':' : ''}`,
        );
        for (const d of r.items as Record<string, any>[])
          out(
            `  ${d.event ?? '?'} ${d.action ?? ''} ${styleText('red', String(d.reason ?? ''))} after ${d.attempts ?? '?'} attempt(s)` +
              `${d.dead_at ? ` at ${d.dead_at}` : ''}${d.last_status ? `, last ${d.last_status}` : ''}${d.last_error ? `: ${short(d.last_error, 100)}` : ''}`,
          );
      }),
    );

  program
    .command('resurrect <subscription>')
    .description('move dead letters back to the subscription queue, attempts reset (confirmed before removed)')
    .option('--count <n>', 'at most n (default: all, up to 100,000)')
    .option(
      '--since <time>',
      'only letters that died at or after it: RFC 3339, or how long ago (30m, 2h); the older stay, in order',
    )
    .option('--json', 'print JSON')
    .action(
      action(async (sub: string, o: Flags) => {
        const limit = positiveInt(o.count, '--count') ?? 100_000;
        const since = o.since === undefined ? undefined : sinceTime(String(o.since));
        const r = await admin(
          deps,
          'POST',
          `/v1/subscriptions/${encodeURIComponent(sub)}/dead-letters/resurrect`,
          { limit, ...(since ? { since } : {}) },
          120_000,
        );
        if (o.json) out(JSON.stringify(r));
        else
          out(
            `${styleText('green', 'resurrected')} ${r.resurrected}` +
              (since ? ` (died since ${since}; ${r.older ?? 0} older left)` : ''),
          );
      }),
    );

  program
    .command('replay <subscription>')
    .description('deliver the stored events of a time range to a subscription again')
    .requiredOption('--from <time>', 'RFC 3339 start (inclusive)')
    .option('--to <time>', 'RFC 3339 end (exclusive; default now)')
    .option('--json', 'print JSON')
    .action(
      action(async (sub: string, o: Flags) => {
        for (const k of ['from', 'to'] as const)
          if (o[k] !== undefined && Number.isNaN(Date.parse(String(o[k]))))
            throw usage(`--${k} must be an RFC 3339 time (e.g. 2026-01-31T12:00:00Z), not ${JSON.stringify(o[k])}`);
        const r = await admin(
          deps,
          'POST',
          `/v1/subscriptions/${encodeURIComponent(sub)}/replay`,
          { from: o.from, to: o.to },
          120_000,
        );
        if (o.json) out(JSON.stringify(r));
        else out(`${styleText('green', 'replaying')} ${r.count} event(s) from ${r.from} to ${r.to}`);
      }),
    );
}

/** `--since`: an RFC 3339 time, or a duration ago (`30m`, `2h`), as an ISO time. */
function sinceTime(v: string): string {
  if (/^\d{4}-\d{2}-\d{2}/.test(v)) {
    const t = Date.parse(v);
    if (Number.isNaN(t))
      throw usage(`--since must be an RFC 3339 time or a duration (30m, 2h), not ${JSON.stringify(v)}`);
    return new Date(t).toISOString();
  }
  return new Date(Date.now() - parseDuration(v, '--since')).toISOString();
}

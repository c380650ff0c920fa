/**
 * Fabric commands of the `amebo` CLI: `call` an RPC method, list `services`, tail `logs`.
 * Each connects straight to RabbitMQ (no Amebo server needed) and is bounded in time: none of them
 * can hang, whatever the broker or the service does.
 *
 * Exit codes of `call`: 0 result, 1 remote error, 2 timeout / no such service or method / bad input
 * / broker unreachable.
 */
import { styleText } from 'node:util';
import { Option, type Command } from 'commander';
import {
  FabricConnector,
  FabricUnavailableError,
  InvalidNameError,
  JsonDecodeError,
  RemoteError,
  RpcTimeoutError,
  ServiceNotFoundError,
  encodeStrictJson,
  parsePythonJson,
  type LogRecord,
  type ServiceChange,
  type ServiceInfo,
} from '../fabric/index.js';
import { parseLevel } from '../fabric/logs.js';

const EXIT = { ok: 0, remote: 1, failed: 2 } as const;

/** `500ms`, `5s`, `2m`; a bare number is seconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new Error(`invalid duration ${JSON.stringify(s)} (use e.g. 500ms, 5s, 2m)`);
  const n = Number(m[1]);
  const ms = m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
  if (ms < 1) throw new Error(`duration ${JSON.stringify(s)} is too short`);
  return Math.round(ms);
}

const tty = (): boolean => process.stdout.isTTY;
const paint = (style: Parameters<typeof styleText>[0], s: string): string => (tty() ? styleText(style, s) : s);

function out(s: string): Promise<void> {
  return new Promise((r) => process.stdout.write(s, () => r()));
}
function err(s: string): Promise<void> {
  return new Promise((r) => process.stderr.write(s, () => r()));
}

/** Flushes output, closes the connector (bounded) and exits with `code`. */
async function finish(code: number, fabric?: FabricConnector): Promise<never> {
  if (fabric) await Promise.race([fabric.close().catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(code);
}

/** A last resort against anything that would keep the process waiting. */
function deadman(ms: number): void {
  setTimeout(() => {
    process.stderr.write('amebo: gave up (internal deadline)\n');
    process.exit(EXIT.failed);
  }, ms).unref();
}

function cliConnector(url: string, extra: { serviceTtlMs?: number } = {}): FabricConnector {
  return new FabricConnector({
    amqpUrl: url,
    domain: 'amebo',
    type: 'cli',
    id: `cli-${process.pid}`,
    keepAliveMs: 0,
    drainTimeoutMs: 500,
    ...extra,
  });
}

export function registerFabricCommands(program: Command, getAmqpUrl: () => string): void {
  program
    .command('call')
    .description('call an RPC method of a fabric service (Python amqp-fabric or TypeScript)')
    .argument('<domain>', 'service domain')
    .argument('<type>', 'service type')
    .argument('<id>', 'service id')
    .argument('<method>', 'method name')
    .argument('[json]', 'keyword arguments as a JSON object', '{}')
    .addOption(
      new Option('-t, --timeout <duration>', 'deadline of the call (500ms, 5s, 2m; a bare number is seconds)').default(
        '10s',
      ),
    )
    .option('--json', 'print the result (or the error) as one line of JSON')
    .addHelpText(
      'after',
      '\nExit codes: 0 result, 1 remote error, 2 timeout, no such service/method, bad input or broker unreachable.',
    )
    .action(
      async (
        domain: string,
        type: string,
        id: string,
        method: string,
        json: string,
        opts: { timeout: string; json?: boolean },
      ) => {
        let timeoutMs: number;
        let args: unknown;
        try {
          timeoutMs = parseDuration(opts.timeout);
          args = parsePythonJson(json);
        } catch (e) {
          await err(
            `amebo: ${e instanceof JsonDecodeError ? `arguments are not JSON: ${e.message}` : (e as Error).message}\n`,
          );
          return finish(EXIT.failed);
        }
        if (args === null || typeof args !== 'object' || Array.isArray(args)) {
          await err('amebo: arguments must be a JSON object of keyword arguments, e.g. \'{"x": 5}\'\n');
          return finish(EXIT.failed);
        }
        deadman(timeoutMs + 15_000);
        const fabric = cliConnector(getAmqpUrl());
        try {
          await fabric.open({ timeoutMs: Math.min(timeoutMs, 10_000) });
          const result = await fabric.rpcCall({ domain, type, id }, method, args, { timeoutMs });
          await out(
            opts.json
              ? `${encodeStrictJson(result)}\n`
              : `${JSON.stringify(JSON.parse(encodeStrictJson(result)), null, 2)}\n`,
          );
          return await finish(EXIT.ok, fabric);
        } catch (e) {
          if (e instanceof RemoteError) {
            await err(
              opts.json
                ? `${encodeStrictJson({ error: { type: e.type, message: e.message, args: e.args } })}\n`
                : `${paint('red', 'remote error')} ${paint('bold', e.type)}: ${e.message}\n${e.args.length ? `  args: ${encodeStrictJson(e.args)}\n` : ''}`,
            );
            return finish(EXIT.remote, fabric);
          }
          const known = [RpcTimeoutError, ServiceNotFoundError, FabricUnavailableError, InvalidNameError].some(
            (k) => e instanceof k,
          );
          const what =
            e instanceof RpcTimeoutError ? 'timeout' : e instanceof ServiceNotFoundError ? 'not found' : 'failed';
          await err(
            opts.json
              ? `${JSON.stringify({ error: { kind: what, message: (e as Error).message } })}\n`
              : `${paint('red', `amebo: ${what}:`)} ${known ? (e as Error).message : ((e as Error).stack ?? String(e))}\n`,
          );
          return finish(EXIT.failed, fabric);
        }
      },
    );

  program
    .command('services')
    .description('list services heard on the discovery exchange (keep-alives), with status')
    .option('-d, --domain <domain>', 'only this domain (exact match)')
    .option('--type <type>', 'only this service type (exact match)')
    .option('-w, --watch', 'then print status changes until interrupted')
    .addOption(new Option('--wait <duration>', 'how long to listen before listing').default('3s'))
    .option('--json', 'print JSON')
    .action(async (opts: { domain?: string; type?: string; watch?: boolean; wait: string; json?: boolean }) => {
      let waitMs: number;
      try {
        waitMs = parseDuration(opts.wait);
      } catch (e) {
        await err(`amebo: ${(e as Error).message}\n`);
        return finish(EXIT.failed);
      }
      if (!opts.watch) deadman(waitMs + 20_000);
      const fabric = cliConnector(getAmqpUrl());
      const filter = { ...(opts.domain ? { domain: opts.domain } : {}), ...(opts.type ? { type: opts.type } : {}) };
      try {
        await fabric.open({ timeoutMs: 10_000 });
        const list = await fabric.listServices(filter, { settleMs: waitMs });
        await out(opts.json ? `${JSON.stringify(list)}\n` : table(list));
      } catch (e) {
        await err(`amebo: ${(e as Error).message}\n`);
        return finish(EXIT.failed, fabric);
      }
      if (!opts.watch) return finish(EXIT.ok, fabric);
      fabric.on('service', (c: ServiceChange) => {
        if ((filter.domain && c.domain !== filter.domain) || (filter.type && c.service_type !== filter.type)) return;
        process.stdout.write(opts.json ? `${JSON.stringify(c)}\n` : `${changeLine(c)}\n`);
      });
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      return finish(EXIT.ok, fabric);
    });

  program
    .command('logs')
    .description('tail remote logs of a domain ({domain}.log.records), Python and TypeScript services alike')
    .requiredOption('-d, --domain <domain>', 'domain whose logs to tail')
    .option('-s, --service <id>', 'only this service (id, or type.id)')
    .option('-l, --level <level>', 'lowest level: DEBUG, INFO, WARNING, ERROR, CRITICAL (or pino names)')
    .option('-n, --count <n>', 'stop after this many records')
    .addOption(new Option('-t, --timeout <duration>', 'stop after this long (500ms, 5s, 2m; a bare number is seconds)'))
    .option('--json', 'one JSON object per record')
    .action(
      async (opts: {
        domain: string;
        service?: string;
        level?: string;
        count?: string;
        timeout?: string;
        json?: boolean;
      }) => {
        let count = Infinity;
        let timeoutMs: number | undefined;
        try {
          if (opts.count !== undefined) {
            count = Number(opts.count);
            if (!Number.isInteger(count) || count < 1) throw new Error('--count must be a positive integer');
          }
          if (opts.timeout !== undefined) timeoutMs = parseDuration(opts.timeout);
          if (opts.level) parseLevel(opts.level);
        } catch (e) {
          await err(`amebo: ${(e as Error).message}\n`);
          return finish(EXIT.failed);
        }
        if (timeoutMs !== undefined) deadman(timeoutMs + 20_000);
        const fabric = cliConnector(getAmqpUrl());
        let seen = 0;
        let stop: () => void = () => undefined;
        const stopped = new Promise<void>((resolve) => (stop = resolve));
        try {
          await fabric.open({ timeoutMs: 10_000 });
          await fabric.subscribeLogs(
            { domain: opts.domain, service: opts.service, level: opts.level },
            (r: LogRecord) => {
              if (seen >= count) return;
              seen++;
              process.stdout.write(opts.json ? `${JSON.stringify(logJson(r))}\n` : `${logLine(r)}\n`);
              if (seen >= count) stop();
            },
          );
        } catch (e) {
          await err(`amebo: ${(e as Error).message}\n`);
          return finish(EXIT.failed, fabric);
        }
        if (timeoutMs !== undefined) setTimeout(stop, timeoutMs).unref();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        await stopped;
        await out('');
        return finish(EXIT.ok, fabric);
      },
    );
}

function table(list: ServiceInfo[]): string {
  if (list.length === 0) return 'no services heard\n';
  const rows = list.map((s) => [s.fqn, s.status, String(s.instances), s.version ?? '-', s.host ?? '-', s.last_seen]);
  const head = ['SERVICE', 'STATUS', 'INST', 'VERSION', 'HOST', 'LAST SEEN'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  const colour = (s: string): string =>
    s === 'up' ? paint('green', s) : s === 'stale' ? paint('yellow', s) : paint('red', s);
  return (
    [paint('bold', line(head)), ...rows.map((r) => line(r).replace(` ${r[1]} `, ` ${colour(r[1]!)} `))].join('\n') +
    '\n'
  );
}

function changeLine(c: ServiceChange): string {
  return `${new Date().toISOString()}  ${c.fqn}  ${c.previous ?? 'new'} -> ${c.status}`;
}

function logLine(r: LogRecord): string {
  const colour = r.level === 'ERROR' || r.level === 'CRITICAL' ? 'red' : r.level === 'WARNING' ? 'yellow' : 'dim';
  return `${r.time ?? new Date().toISOString()} ${paint(colour, r.level.padEnd(8))} ${r.serviceType}.${r.serviceId}  ${r.message}`;
}

function logJson(r: LogRecord): Record<string, unknown> {
  const headers: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r.headers)) headers[k] = Buffer.isBuffer(v) ? v.toString('utf8') : v;
  return {
    domain: r.domain,
    service_type: r.serviceType,
    service_id: r.serviceId,
    level: r.level,
    time: r.time,
    message: r.message,
    headers,
  };
}

/**
 * Fabric commands of the `amebo` CLI: `call` an RPC method, list `services`, tail `logs`.
 * Each connects straight to RabbitMQ (no Amebo server needed) and is bounded in time: none of them
 * can hang, whatever the broker or the service does.
 *
 * Exit codes and output follow the CLI contract (./contract.ts): for `call`, 1 is an error the
 * fabric answered (the method raised, no such service or method), 3 no answer in time or no broker.
 */
import { Option, type Command } from 'commander';
import type { FabricConnector, LogRecord, ServiceChange, ServiceInfo } from '../fabric/index.js';
import { loadConfig, type Config } from '../config.js';
import { action, CliError, EXIT, parseDuration, paint, positiveInt, unreachable, usage, write } from './contract.js';
import { api } from './tools.js';

const out = (s: string): Promise<void> => write(process.stdout, s);

/** The fabric (the connector, amqplib), loaded by these commands only: every other command starts faster. */
const loadFabric = () => import('../fabric/index.js');

/** Closes the connector (bounded). */
async function closeFabric(fabric?: FabricConnector): Promise<void> {
  if (fabric) await Promise.race([fabric.close().catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
}

/** A last resort against anything that would keep the process waiting. */
function deadman(ms: number): void {
  setTimeout(() => {
    process.stderr.write('amebo: gave up (internal deadline)\n');
    process.exit(EXIT.unreachable);
  }, ms).unref();
}

/** Opens the connector; no broker within the time is exit 3. */
async function openFabric(fabric: FabricConnector, timeoutMs: number, url: string): Promise<void> {
  try {
    await fabric.open({ timeoutMs });
  } catch (e) {
    await closeFabric(fabric);
    throw unreachable(`RabbitMQ at ${url.replace(/\/\/[^@/]*@/, '//')}`, (e as Error).message);
  }
}

async function cliConnector(url: string, extra: { serviceTtlMs?: number } = {}): Promise<FabricConnector> {
  const { FabricConnector } = await loadFabric();
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

export interface FabricCommandDeps {
  amqpUrl: () => string;
  /** The admin token, to ask a running Amebo's presence for the services it knows. */
  adminToken: (cfg: Config) => string | undefined;
}

export function registerFabricCommands(program: Command, deps: FabricCommandDeps): void {
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
    .option('--json', 'print the result (or the error) as one line of JSON on stdout')
    .addHelpText(
      'after',
      '\nExit codes: 0 result, 1 the method raised or no such service/method, 2 bad input, 3 no answer in time or broker unreachable.',
    )
    .action(
      action(
        async (
          domain: string,
          type: string,
          id: string,
          method: string,
          json: string,
          opts: { timeout: string; json?: boolean },
        ) => {
          const timeoutMs = parseDuration(opts.timeout, '--timeout');
          const {
            FabricUnavailableError,
            InvalidNameError,
            RemoteError,
            RpcTimeoutError,
            ServiceNotFoundError,
            encodeStrictJson,
            parsePythonJson,
          } = await loadFabric();
          let args: unknown;
          try {
            args = parsePythonJson(json);
          } catch (e) {
            throw usage(`arguments are not JSON: ${(e as Error).message}`);
          }
          if (args === null || typeof args !== 'object' || Array.isArray(args))
            throw usage('arguments must be a JSON object of keyword arguments, e.g. \'{"x": 5}\'');
          deadman(timeoutMs + 15_000);
          const url = deps.amqpUrl();
          const fabric = await cliConnector(url);
          await openFabric(fabric, Math.min(timeoutMs, 10_000), url);
          try {
            const result = await fabric.rpcCall({ domain, type, id }, method, args, { timeoutMs });
            await out(
              opts.json
                ? `${encodeStrictJson(result)}\n`
                : `${JSON.stringify(JSON.parse(encodeStrictJson(result)), null, 2)}\n`,
            );
          } catch (e) {
            if (e instanceof RemoteError)
              throw new CliError(EXIT.answered, 'REMOTE_ERROR', `remote error ${e.type}: ${e.message}`, {
                details: { type: e.type, args: JSON.parse(encodeStrictJson(e.args)) as unknown },
                lines: e.args.length ? [`  args: ${encodeStrictJson(e.args)}`] : [],
              });
            if (e instanceof ServiceNotFoundError)
              throw new CliError(EXIT.answered, 'NOT_FOUND', `not found: ${e.message}`);
            if (e instanceof InvalidNameError) throw usage(e.message);
            if (e instanceof RpcTimeoutError || e instanceof FabricUnavailableError)
              throw new CliError(
                EXIT.unreachable,
                e instanceof RpcTimeoutError ? 'TIMEOUT' : 'UNREACHABLE',
                `${e instanceof RpcTimeoutError ? 'timeout' : 'unreachable'}: ${e.message}`,
              );
            throw e;
          } finally {
            await closeFabric(fabric);
          }
        },
      ),
    );

  program
    .command('services')
    .description(
      "list services: what a running Amebo's presence knows (down ones included) and the keep-alives heard meanwhile",
    )
    .option('-d, --domain <domain>', 'only this domain (exact match)')
    .option('--type <type>', 'only this service type (exact match)')
    .option('-w, --watch', 'then print status changes until interrupted')
    .addOption(new Option('--wait <duration>', 'how long to listen for keep-alives before listing').default('3s'))
    .option('--json', 'print JSON')
    .action(
      action(async (opts: { domain?: string; type?: string; watch?: boolean; wait: string; json?: boolean }) => {
        const waitMs = parseDuration(opts.wait, '--wait');
        if (!opts.watch) deadman(waitMs + 20_000);
        const url = deps.amqpUrl();
        const fabric = await cliConnector(url);
        const filter = { ...(opts.domain ? { domain: opts.domain } : {}), ...(opts.type ? { type: opts.type } : {}) };
        await openFabric(fabric, 10_000, url);
        const [heard, known] = await Promise.all([
          fabric.listServices(filter, { settleMs: waitMs }),
          presenceList(deps, filter),
        ]);
        const list = mergeServices(known, heard);
        await out(opts.json ? `${JSON.stringify(list)}\n` : table(list));
        if (!opts.watch) return closeFabric(fabric);
        fabric.on('service', (c: ServiceChange) => {
          if ((filter.domain && c.domain !== filter.domain) || (filter.type && c.service_type !== filter.type)) return;
          process.stdout.write(opts.json ? `${JSON.stringify(c)}\n` : `${changeLine(c)}\n`);
        });
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        await closeFabric(fabric);
      }),
    );

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
      action(
        async (opts: {
          domain: string;
          service?: string;
          level?: string;
          count?: string;
          timeout?: string;
          json?: boolean;
        }) => {
          const count = positiveInt(opts.count, '--count') ?? Infinity;
          const timeoutMs = opts.timeout !== undefined ? parseDuration(opts.timeout, '--timeout') : undefined;
          const { InvalidNameError } = await loadFabric();
          const { parseLevel } = await import('../fabric/logs.js');
          if (opts.level)
            try {
              parseLevel(opts.level);
            } catch (e) {
              throw usage((e as Error).message);
            }
          if (timeoutMs !== undefined) deadman(timeoutMs + 20_000);
          const url = deps.amqpUrl();
          const fabric = await cliConnector(url);
          let seen = 0;
          let stop: () => void = () => undefined;
          const stopped = new Promise<void>((resolve) => (stop = resolve));
          await openFabric(fabric, 10_000, url);
          try {
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
            await closeFabric(fabric);
            throw e instanceof InvalidNameError ? usage(e.message) : e;
          }
          if (timeoutMs !== undefined) setTimeout(stop, timeoutMs).unref();
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          await stopped;
          await out('');
          await closeFabric(fabric);
        },
      ),
    );
}

/** What a running Amebo's presence knows (empty when none answers within 3 s or no token is set). */
async function presenceList(
  deps: FabricCommandDeps,
  filter: { domain?: string; type?: string },
): Promise<ServiceInfo[]> {
  try {
    const cfg = loadConfig();
    const token = deps.adminToken(cfg);
    if (!token) return [];
    const q = new URLSearchParams(filter as Record<string, string>).toString();
    const r = await api(cfg, 'GET', `/v1/services${q ? `?${q}` : ''}`, undefined, `Bearer ${token}`, 3000);
    return r.status === 200 && Array.isArray(r.body?.items) ? (r.body.items as ServiceInfo[]) : [];
  } catch {
    return [];
  }
}

/** One row per service: what was heard now wins over what presence remembered. */
export function mergeServices(known: ServiceInfo[], heard: ServiceInfo[]): ServiceInfo[] {
  const by = new Map<string, ServiceInfo>();
  for (const s of known) by.set(s.fqn, s);
  for (const s of heard) by.set(s.fqn, s);
  return [...by.values()].sort((a, b) => a.fqn.localeCompare(b.fqn));
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

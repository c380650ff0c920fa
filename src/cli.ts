import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { styleText } from 'node:util';
import { Command, CommanderError, Option } from 'commander';
import {
  ConfigError,
  configWithFlags,
  effectiveOptions,
  loadConfig,
  type Config,
  type EffectiveOption,
} from './config.js';
import { action, CliError, EXIT, fail, out, paint, usage } from './cli/contract.js';
import { createLogger, redactUrl } from './log.js';
import type { Amebo } from './app.js';

// The server (app.js and what it pulls in: fastify, pg, ioredis, ajv...) is loaded by the commands that
// run it, not by every `amebo publish` or `amebo inspect`: half a second less per command.
const server = () => import('./app.js');

const program = new Command();
program
  .name('amebo')
  .description('HTTP-first event notification server in front of RabbitMQ, plus an AMQP service fabric')
  .version('0.1.0')
  .showHelpAfterError()
  // Usage errors (a missing argument, an unknown option) exit 2, help and --version 0 (below);
  // set before the subcommands are added, which inherit it.
  .exitOverride();

type ServeFlags = { address?: string; workers?: string; role?: string; logLevel?: string; prefix?: string };

/** The serve flags, named by their environment variable. */
function flagVars(flags: ServeFlags): Record<string, string | undefined> {
  return {
    AMEBO_ADDRESS: flags.address,
    AMEBO_WORKERS: flags.workers,
    AMEBO_ROLES: flags.role,
    AMEBO_LOG_LEVEL: flags.logLevel,
    AMEBO_PREFIX: flags.prefix,
  };
}

/** Flags go through the same parsing and checks as their environment variables. */
function configFrom(flags: ServeFlags): Config {
  return configWithFlags(flagVars(flags));
}

/**
 * A startup failure, per the CLI contract: bad configuration 2, a store unreachable 3, the listen
 * address taken 2 (with what to change); anything else one line and the file with its details.
 */
function die(err: unknown): Promise<never> {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (err instanceof ConfigError) return fail(usage(err.message));
  // By name: app.js (which defines it) is loaded only by the commands that start the server.
  if (e?.name === 'ServiceUnreachableError') return fail(new CliError(EXIT.unreachable, 'UNREACHABLE', e.message));
  if (e?.code === 'EADDRINUSE' || e?.code === 'EACCES' || e?.code === 'EADDRNOTAVAIL')
    return fail(
      usage(
        `cannot listen on ${e.address ?? ''}${e.port !== undefined ? `:${e.port}` : ''}: ${
          e.code === 'EADDRINUSE'
            ? 'the address is in use (another amebo serve?)'
            : e.code === 'EACCES'
              ? 'permission denied'
              : 'no such local address'
        }; choose another with --address or AMEBO_ADDRESS`,
      ),
    );
  return fail(err);
}

async function runProcess(cfg: Config, skipMigrate: boolean): Promise<void> {
  const log = createLogger(cfg.logLevel);
  if (cluster.isWorker) (await import('./metrics.js')).joinClusterMetrics();
  let amebo: Amebo;
  try {
    const [{ startAmebo }, { extraParts, extraPlugins }] = await Promise.all([server(), import('./plugins.js')]);
    amebo = await startAmebo(cfg, log, { skipMigrate, plugins: await extraPlugins(cfg), parts: await extraParts(cfg) });
  } catch (err) {
    return die(err);
  }
  if (amebo.generatedAdminToken)
    process.stderr.write(
      `\n${styleText('bold', 'Admin token')} (shown once; saved to ${path.resolve(cfg.stateDir, 'admin-token')}):\n  ${amebo.generatedAdminToken}\n\n`,
    );
  log.info({ address: cfg.address, roles: [...cfg.roleSet], pid: process.pid }, 'amebo started');
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'draining, then closing');
    const hard = setTimeout(() => process.exit(1), 20_000);
    hard.unref();
    void amebo.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function serve(flags: ServeFlags): Promise<void> {
  let cfg: Config;
  try {
    cfg = configFrom(flags);
  } catch (err) {
    return die(err);
  }
  if (cfg.workers <= 1 || cluster.isWorker) return runProcess(cfg, cluster.isWorker);
  // Primary: migrate once, then fork workers that share the HTTP port; restart any that dies.
  const log = createLogger(cfg.logLevel);
  try {
    await (await server()).prepareDatabase(cfg, log);
  } catch (err) {
    return die(err);
  }
  (await import('./metrics.js')).serveClusterMetrics();
  let stopping = false;
  const fork = (): void => {
    cluster.fork(); // inherits this process's environment
  };
  cluster.on('exit', (w, code, signal) => {
    if (stopping) return;
    log.warn({ pid: w.process.pid, code, signal }, 'worker exited; starting another');
    setTimeout(fork, 1000);
  });
  for (let i = 0; i < cfg.workers; i++) fork();
  const stop = (): void => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 25_000).unref();
    cluster.on('exit', () => {
      if (!Object.keys(cluster.workers ?? {}).length) process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const serveCmd = program
  .command('serve', { isDefault: true })
  .description('run Amebo: API, bridge, relay and presence (default command)')
  .addOption(new Option('-a, --address <host:port>', 'listen address').env('AMEBO_ADDRESS'))
  .addOption(new Option('-w, --workers <n>', 'processes sharing the HTTP port').env('AMEBO_WORKERS'))
  .addOption(new Option('--role <roles>', 'comma-separated roles: api,bridge,relay,presence').env('AMEBO_ROLES'))
  .addOption(new Option('--log-level <level>', 'log level').env('AMEBO_LOG_LEVEL'))
  .addOption(new Option('--prefix <prefix>', 'RabbitMQ name prefix').env('AMEBO_PREFIX'))
  .action((flags: ServeFlags) => serve(flags));
void serveCmd;

program
  .command('migrate')
  .description('create the database when missing and apply migrations')
  .action(async () => {
    try {
      const cfg = loadConfig();
      await (await server()).prepareDatabase(cfg, createLogger(cfg.logLevel));
      await out('migrations applied');
    } catch (err) {
      await die(err);
    }
  });

program
  .command('rotate-key')
  .description(
    're-seal every stored secret under the current key (AMEBO_SECRET_KEY or AMEBO_SECRET_KEY_FILE) while the ' +
      'previous ones (AMEBO_PREVIOUS_SECRET_KEYS, or the key Amebo generated into PostgreSQL) still open them',
  )
  .action(async () => {
    try {
      const cfg = loadConfig();
      const log = createLogger(cfg.logLevel === 'info' ? 'warn' : cfg.logLevel);
      const { prepareDatabase, rotateSecretKey } = await server();
      await prepareDatabase(cfg, log);
      const r = await rotateSecretKey(cfg, log);
      process.stdout.write(
        `re-sealed ${r.changed} of ${r.rows} subscriptions under key ${r.keyId}` +
          (r.droppedStoredKey ? '; the key Amebo had generated into PostgreSQL is deleted' : '') +
          '\nEvery process must now run with this key; AMEBO_PREVIOUS_SECRET_KEYS can be emptied.\n',
      );
    } catch (err) {
      await die(err);
    }
  });

program
  .command('config')
  .description('print the value in effect of every option and where it came from (default, env, flag)')
  .addOption(new Option('-a, --address <host:port>', 'as for serve'))
  .addOption(new Option('-w, --workers <n>', 'as for serve'))
  .addOption(new Option('--role <roles>', 'as for serve'))
  .addOption(new Option('--log-level <level>', 'as for serve'))
  .addOption(new Option('--prefix <prefix>', 'as for serve'))
  .option('--json', 'print JSON: [{ option, env, value, source, doc }]')
  .action(
    action(async (o: ServeFlags & { json?: boolean }) => {
      let rows: EffectiveOption[];
      try {
        rows = effectiveOptions(flagVars(o));
      } catch (err) {
        throw err instanceof ConfigError ? usage(err.message) : err;
      }
      // Credentials are shown as set or not, URLs without their passwords.
      rows = rows.map((r) =>
        r.kind === 'secret'
          ? { ...r, value: r.value ? '(set)' : '' }
          : r.kind === 'url' && typeof r.value === 'string'
            ? { ...r, value: redactUrl(r.value) }
            : r,
      );
      if (o.json) return out(JSON.stringify(rows.map(({ kind: _kind, ...r }) => r)));
      const width = Math.max(...rows.map((r) => r.env.length));
      await out(
        rows
          .map(
            (r) =>
              `${r.env.padEnd(width)}  ${JSON.stringify(r.value)}${r.source === 'default' ? '' : paint('yellow', ` (${r.source})`)}\n${' '.repeat(width + 2)}${paint('dim', r.doc)}`,
          )
          .join('\n'),
      );
    }),
  );

/** The admin token for CLI commands: AMEBO_ADMIN_TOKEN, else the one `serve` generated and saved. */
export function adminToken(cfg: Config): string | undefined {
  if (cfg.adminToken) return cfg.adminToken;
  try {
    return readFileSync(path.resolve(cfg.stateDir, 'admin-token'), 'utf8').trim();
  } catch {
    return undefined;
  }
}

const { registerTools } = await import('./cli/tools.js');
registerTools(program, { adminToken });
const { registerOpsCommands } = await import('./cli/ops-commands.js');
registerOpsCommands(program, { adminToken });
const { registerFabricCommands } = await import('./cli/fabric-commands.js');
registerFabricCommands(program, { amqpUrl: () => loadConfig().amqpUrl, adminToken });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError)
    process.exit(['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(e.code) ? 0 : EXIT.usage);
  await fail(e);
}

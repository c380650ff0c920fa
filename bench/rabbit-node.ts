/**
 * A throwaway single RabbitMQ node for the benches, beside (never touching) the shared broker on
 * 5672 and the chaos stack of scripts/cluster.sh (5681-5683): its own node name
 * (amebo-fp@localhost), AMQP port (5695), Erlang distribution port (25695), Erlang cookie
 * (HOME=<dir>/home), data, log and config under a temporary directory, no plugins, and
 * `ulimit -n 65536` (or the hard limit when that is lower) so that its file handle cache does not
 * cap the number of quorum queues. Started as scripts/cluster.sh starts its nodes: RabbitMQ's own
 * scripts in /usr/lib/rabbitmq/bin (the Debian /usr/sbin wrappers switch user through `su`, which
 * resets HOME and so the cookie) with the RABBITMQ_* environment. Every CLI call names the node
 * (`-n`) and carries the same environment. `stop()` stops the node (rabbitmqctl -n <node> stop,
 * then SIGKILL of its own VM — checked by the RABBITMQ_NODENAME in the process's environment) and
 * removes the directory.
 *
 * Environment: BENCH_RABBIT_NODE (amebo-fp@localhost), BENCH_RABBIT_PORT (5695),
 * BENCH_RABBIT_DIST_PORT (25695), BENCH_RABBIT_SBIN (/usr/lib/rabbitmq/bin).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { comm } from './cpu.js';

const SBIN = process.env.BENCH_RABBIT_SBIN ?? '/usr/lib/rabbitmq/bin';

export interface RabbitNode {
  name: string;
  port: number;
  distPort: number;
  dir: string;
  amqpUrl: string;
  /** The node's Erlang VM (beam.smp) pid, checked against its environment; undefined once it is gone. */
  beamPid(): number | undefined;
  /** The soft open-file limit the VM runs with (/proc/<pid>/limits). */
  nofile(): number | undefined;
  /** rabbitmqctl -q -n <node> ARGS, bounded. */
  ctl(args: string[], timeoutMs?: number): Promise<string>;
  /** rabbitmq-diagnostics -q -n <node> ARGS, bounded. */
  diag(args: string[], timeoutMs?: number): Promise<string>;
  /** Stops the node and removes its directory (idempotent). */
  stop(): Promise<void>;
}

const portOpen = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function environHas(pid: number, entry: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(entry);
  } catch {
    return false;
  }
}

export async function startRabbitNode(
  opts: { name?: string; port?: number; distPort?: number; timeoutMs?: number } = {},
): Promise<RabbitNode> {
  const name = opts.name ?? process.env.BENCH_RABBIT_NODE ?? 'amebo-fp@localhost';
  const port = opts.port ?? Number(process.env.BENCH_RABBIT_PORT ?? 5695);
  const distPort = opts.distPort ?? Number(process.env.BENCH_RABBIT_DIST_PORT ?? 25695);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  if (port === 5672 || (port >= 5681 && port <= 5683)) throw new Error(`port ${port} belongs to another broker`);
  for (const p of [port, distPort])
    if (await portOpen(p)) throw new Error(`127.0.0.1:${p} is taken: another process listens there; not starting`);

  const dir = mkdtempSync(path.join(tmpdir(), 'amebo-rabbit-'));
  const home = path.join(dir, 'home');
  mkdirSync(home, { mode: 0o700 });
  for (const d of ['mnesia', 'log', 'conf.d']) mkdirSync(path.join(dir, d));
  writeFileSync(path.join(home, '.erlang.cookie'), `AMEBOFP${randomBytes(12).toString('hex').toUpperCase()}`, {
    mode: 0o400,
  });
  writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
  writeFileSync(path.join(dir, 'rabbitmq-env.conf'), '# bench/rabbit-node.ts: settings come from the environment\n');
  writeFileSync(
    path.join(dir, 'rabbitmq.conf'),
    [
      '# bench/rabbit-node.ts: a throwaway node for the benches',
      `listeners.tcp.1 = 127.0.0.1:${port}`,
      'loopback_users.guest = true',
      'disk_free_limit.absolute = 50MB',
      'log.file.level = warning',
      '',
    ].join('\n'),
  );
  writeFileSync(path.join(dir, 'advanced.config'), '[].\n');
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    LANG: 'C.UTF-8',
    HOME: home,
    RABBITMQ_CONF_ENV_FILE: path.join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_NODENAME: name,
    RABBITMQ_USE_LONGNAME: 'false',
    RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq.conf'),
    RABBITMQ_CONFIG_FILES: path.join(dir, 'conf.d', '*.conf'),
    RABBITMQ_ADVANCED_CONFIG_FILE: path.join(dir, 'advanced.config'),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_PID_FILE: path.join(dir, 'beam.pid'),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
    RABBITMQ_PLUGINS_EXPAND_DIR: path.join(dir, 'plugins-expand'),
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    ERL_EPMD_ADDRESS: '127.0.0.1',
  };

  const cli =
    (tool: string) =>
    (args: string[], ms = 60_000): Promise<string> =>
      new Promise((resolve, reject) =>
        execFile(
          path.join(SBIN, tool),
          ['-q', '-n', name, ...args],
          { env, timeout: ms, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
          (err, out, errOut) =>
            err ? reject(new Error(`${tool} ${args.join(' ')}: ${err.message} ${errOut}`.slice(0, 600))) : resolve(out),
        ),
      );
  const ctl = cli('rabbitmqctl');
  const diag = cli('rabbitmq-diagnostics');

  const logFd = openSync(path.join(dir, 'startup.log'), 'a');
  // Many open files: 3 file handles per quorum queue in RabbitMQ 3.x's file_handle_cache.
  const launcher = spawn(
    'bash',
    [
      '-c',
      'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; exec "$0"',
      path.join(SBIN, 'rabbitmq-server'),
    ],
    { cwd: dir, env, detached: true, stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  launcher.unref();
  let launcherExited = false;
  launcher.once('exit', () => (launcherExited = true));

  const ours = (pid: number | undefined): pid is number =>
    !!pid && comm(pid) === 'beam.smp' && environHas(pid, `RABBITMQ_NODENAME=${name}`);
  let pid: number | undefined;
  const beamPid = (): number | undefined => {
    if (ours(pid)) return pid;
    for (const cand of [
      Number(readFileSafe(path.join(dir, 'beam.pid')).trim()) || undefined,
      launcher.pid, // `rabbitmq-server` execs erl, which execs beam.smp: often the same pid
    ])
      if (ours(cand)) return (pid = cand);
    return undefined;
  };

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const p = beamPid();
    if (p) {
      await ctl(['stop'], 60_000).catch(() => undefined);
      for (let i = 0; i < 150 && ours(p); i++) await sleep(200);
      if (ours(p)) process.kill(p, 'SIGKILL');
      for (let i = 0; i < 50 && ours(p); i++) await sleep(100);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const node: RabbitNode = {
    name,
    port,
    distPort,
    dir,
    amqpUrl: `amqp://guest:guest@127.0.0.1:${port}`,
    beamPid,
    nofile() {
      const p = beamPid();
      if (!p) return undefined;
      try {
        const m = /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${p}/limits`, 'utf8'));
        return m ? Number(m[1]) : undefined;
      } catch {
        return undefined;
      }
    },
    ctl,
    diag,
    stop,
  };

  const deadline = Date.now() + timeoutMs;
  try {
    while (!(await portOpen(port)) || !beamPid()) {
      if (launcherExited && !beamPid()) throw new Error(`${name} exited while starting`);
      if (Date.now() > deadline) throw new Error(`${name} did not open 127.0.0.1:${port} in ${timeoutMs / 1000} s`);
      await sleep(300);
    }
    await ctl(['await_startup', '--timeout', String(Math.max(5, Math.round((deadline - Date.now()) / 1000)))]);
  } catch (err) {
    const log = readFileSafe(path.join(dir, 'startup.log')).split('\n').slice(-15).join('\n');
    await stop();
    throw new Error(`${(err as Error).message}; last lines of startup.log:\n${log}`, { cause: err });
  }
  return node;
}

function readFileSafe(f: string): string {
  try {
    return readFileSync(f, 'utf8');
  } catch {
    return '';
  }
}

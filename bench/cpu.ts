/**
 * CPU time by process, read from /proc: `utime + stime` (fields 14 and 15 of /proc/<pid>/stat,
 * summed over every thread of the process) in clock ticks of `getconf CLK_TCK` (100 on Linux, so
 * a resolution of 10 ms per process and per reading). Used by the benchmarks to report CPU µs per
 * event for each process involved: Amebo's node process(es) (a pid and its descendants, so
 * `--workers` is covered), the PostgreSQL backends serving one database, the RabbitMQ node
 * (beam.smp), and the bench's own process (load generator / receiver, via process.cpuUsage()).
 *
 * RabbitMQ is shared with whatever else runs on the machine, so its figure is given net of its
 * background rate, the lower of two idle windows just before and just after the stage (see
 * `background`); so is the
 * Redis server's, which the API touches per request (the failed-authentication throttle).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';

export const CLK_TCK = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Fields of /proc/<pid>/stat after the command name: [0] is field 3 (state), [1] ppid, [11] utime, [12] stime. */
function statFields(pid: number): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU time (user + system, all threads) of a process so far, µs; undefined once it is gone. */
export function procCpuUs(pid: number): number | undefined {
  const f = statFields(pid);
  return f ? ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK : undefined;
}

/** User and system CPU time of a process so far, µs (one reading each, same instant). */
export function procUserSysUs(pid: number): { user: number; sys: number } | undefined {
  const f = statFields(pid);
  return f ? { user: (Number(f[11]) * 1e6) / CLK_TCK, sys: (Number(f[12]) * 1e6) / CLK_TCK } : undefined;
}

/** The command name (field 2) of a process. */
export function comm(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
  } catch {
    return undefined;
  }
}

const pids = (): number[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);

/** `pid` and every process below it (node:cluster workers, …). */
export function withDescendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const p of pids()) {
    const ppid = Number(statFields(p)?.[1]);
    if (!ppid) continue;
    let l = children.get(ppid);
    if (!l) children.set(ppid, (l = []));
    l.push(p);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** The RabbitMQ node's pid (the beam.smp process), or undefined when it is not on this machine. */
export function beamPid(): number | undefined {
  const found = pids().filter((p) => comm(p) === 'beam.smp');
  // With several Erlang VMs (unlikely here), the one with the most CPU so far is the broker.
  return found.sort((a, b) => (procCpuUs(b) ?? 0) - (procCpuUs(a) ?? 0))[0];
}

const REDIS_PORT = new URL(process.env.AMEBO_REDIS_URL ?? 'redis://127.0.0.1:6379/0').port || '6379';
/** The shared Redis server's pid (redis-server with :<port> on its command line), if on this machine. */
export function redisPid(): number | undefined {
  return pids().find((p) => {
    if (comm(p) !== 'redis-server') return false;
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`:${REDIS_PORT}`);
    } catch {
      return false;
    }
  });
}

/** Resident set size of a process, KiB (VmRSS of /proc/<pid>/status). */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export const PG_ADMIN_URL = process.env.AMEBO_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** application_name of the bench's own connections to a measured database, left out of the figures. */
export const PROBE_APP = 'amebo-bench-probe';

let admin: pg.Client | undefined;
async function adminClient(): Promise<pg.Client> {
  if (!admin) {
    admin = new pg.Client({ connectionString: PG_ADMIN_URL, application_name: PROBE_APP });
    await admin.connect();
  }
  return admin;
}
export async function closeAdmin(): Promise<void> {
  const c = admin;
  admin = undefined;
  await c?.end().catch(() => undefined);
}

/** PIDs of the PostgreSQL backends connected to `db` (the bench's own probe connections left out). */
export async function pgBackendPids(db: string): Promise<number[]> {
  const c = await adminClient();
  const r = await c.query<{ pid: number }>(
    'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2 AND pid <> pg_backend_pid()',
    [db, PROBE_APP],
  );
  return r.rows.map((x) => x.pid);
}

/** CPU rates of the shared servers while the bench is idle, µs per second of wall time, over `ms`. */
export interface Background {
  rmq: number;
  redis: number;
}
export async function background(ms = 2000): Promise<Background> {
  const [bp, rp] = [beamPid(), redisPid()];
  const read = () => [bp ? (procCpuUs(bp) ?? 0) : 0, rp ? (procCpuUs(rp) ?? 0) : 0];
  const a = read();
  const t = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  const dt = performance.now() - t;
  return { rmq: ((b[0]! - a[0]!) / dt) * 1000, redis: ((b[1]! - a[1]!) / dt) * 1000 };
}

/** CPU used over an interval, µs, by party. */
export interface CpuUse {
  wallMs: number;
  /** The measured node process(es): Amebo, or the baseline's server/consumer/publisher. */
  node: number;
  /** PostgreSQL backends of the measured database. */
  pg: number;
  /** RabbitMQ node, net of its background rate (see `rmqRaw`). */
  rmq: number;
  rmqRaw: number;
  /** The Redis server, net of its background rate. */
  redis: number;
  /** The bench's own process: load generator and/or webhook receiver. */
  gen: number;
}

export interface Measured {
  /** pids of the measured node processes (their descendants are added at each reading). */
  node: number[];
  /** Whether `node` is this process (then read with process.cpuUsage()). */
  self?: boolean;
  /** PostgreSQL database whose backends to count. */
  db?: string;
  /** When the shared servers take part: their background rates (from background()), subtracted from their figures. */
  background?: Background;
}

interface Reading {
  t: number;
  node: Map<number, number>;
  pg: Map<number, number>;
  rmq: number;
  redis: number;
  gen: number;
}

const selfUs = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function read(m: Measured): Promise<Reading> {
  const node = new Map<number, number>();
  if (!m.self)
    for (const p of m.node.flatMap(withDescendants)) {
      const v = procCpuUs(p);
      if (v !== undefined) node.set(p, v);
    }
  const pgm = new Map<number, number>();
  if (m.db)
    for (const p of await pgBackendPids(m.db)) {
      const v = procCpuUs(p);
      if (v !== undefined) pgm.set(p, v);
    }
  const bp = m.background ? beamPid() : undefined;
  const rp = m.background ? redisPid() : undefined;
  const gen = selfUs();
  return {
    t: performance.now(),
    node,
    pg: pgm,
    rmq: bp ? (procCpuUs(bp) ?? 0) : 0,
    redis: rp ? (procCpuUs(rp) ?? 0) : 0,
    gen,
  };
}

/** Sum of end − start over the processes seen at the end (a process new since the start counts from 0). */
const delta = (a: Map<number, number>, b: Map<number, number>): number => {
  let s = 0;
  for (const [p, v] of b) s += v - (a.get(p) ?? 0);
  return s;
};

/** Starts measuring; `stop()` returns what each party used since. */
export async function meter(m: Measured): Promise<{ stop(): Promise<CpuUse> }> {
  const a = await read(m);
  return {
    async stop(): Promise<CpuUse> {
      const b = await read(m);
      const wallMs = b.t - a.t;
      const rmqRaw = b.rmq - a.rmq;
      const gen = b.gen - a.gen;
      // The background is sampled again after the stage and the lower rate of the two is taken: a
      // burst of other work on the shared servers rarely spans both windows.
      let bg = m.background;
      if (bg) {
        const after = await background(1000);
        bg = { rmq: Math.min(bg.rmq, after.rmq), redis: Math.min(bg.redis, after.redis) };
      }
      return {
        wallMs,
        node: m.self ? gen : delta(a.node, b.node),
        pg: delta(a.pg, b.pg),
        rmqRaw,
        rmq: Math.max(0, rmqRaw - ((bg?.rmq ?? 0) * wallMs) / 1000),
        redis: Math.max(0, b.redis - a.redis - ((bg?.redis ?? 0) * wallMs) / 1000),
        gen: m.self ? 0 : gen,
      };
    },
  };
}

/** One row of the CPU table. */
export interface CpuRow {
  stage: string;
  events: number;
  /** Wall time the events took (load window or first → last delivery), ms. */
  wallMs: number;
  /** events/s ÷ the baseline's events/s; undefined for baselines and paced stages. */
  ratio?: number;
  baseline?: boolean;
  cpu: CpuUse;
}

const us = (total: number, n: number): string => (n ? (total / n).toFixed(0) : '-');

export function printCpuTable(rows: CpuRow[], out: (s: string) => void = (s) => process.stdout.write(s)): void {
  const head = [
    'stage'.padEnd(52),
    'events'.padStart(7),
    'wall s'.padStart(7),
    'ev/s'.padStart(7),
    'ratio'.padStart(6),
    'node'.padStart(6),
    'pg'.padStart(5),
    'rmq'.padStart(5),
    'total'.padStart(6),
    'redis'.padStart(6),
    'bench'.padStart(6),
    'rmq raw'.padStart(8),
  ];
  out(`${head.join(' ')}   (CPU µs per event)\n`);
  for (const r of rows) {
    const c = r.cpu;
    out(
      [
        (r.baseline ? `  ${r.stage}` : r.stage).padEnd(52),
        String(r.events).padStart(7),
        (r.wallMs / 1000).toFixed(1).padStart(7),
        Math.round(r.events / (r.wallMs / 1000))
          .toString()
          .padStart(7),
        (r.baseline ? 'base' : r.ratio !== undefined ? r.ratio.toFixed(2) : '-').padStart(6),
        us(c.node, r.events).padStart(6),
        us(c.pg, r.events).padStart(5),
        us(c.rmq, r.events).padStart(5),
        us(c.node + c.pg + c.rmq, r.events).padStart(6),
        (r.cpu.rmqRaw ? us(c.redis, r.events) : '-').padStart(6),
        us(c.gen, r.events).padStart(6),
        (c.rmqRaw ? us(c.rmqRaw, r.events) : '-').padStart(8),
      ].join(' ') + '\n',
    );
  }
}

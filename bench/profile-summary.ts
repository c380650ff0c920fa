/**
 * Summarises a V8 .cpuprofile (node --cpu-prof) as its top self-time frames: function, file:line,
 * self ms and % of the sampled time (and % of the busy time, idle left out).
 *
 *   npx tsx bench/profile-summary.ts <file.cpuprofile> [--top 15] [--markdown] [--window fromUs,toUs]
 *
 * A profile is a tree of nodes ({ id, callFrame: { functionName, url, lineNumber, columnNumber }
 * (0-based), children }) plus `samples` (the node on top of the stack at each tick) and
 * `timeDeltas` (µs between a sample and the one before it). A sample's self time is the delta to
 * the next sample. Frames are grouped by function and position.
 *
 * Amebo runs TypeScript through tsx, which hands V8 minified code (one line per module), so the
 * positions V8 records are in tsx's output: they are mapped back to the .ts sources with the
 * source maps tsx keeps in its cache (<tmpdir>/tsx-<uid>/, JSON { code, map }). When no cached
 * transform matches, the generated position is printed with a `gen:` mark.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Frame {
  functionName: string;
  /** file:line (1-based) relative to the repository, or a node: / internal location. */
  location: string;
  selfMs: number;
  /** % of all sampled time. */
  pct: number;
  /** % of the time not idle. */
  busyPct: number;
}

// ------------------------------------------------------------------ source maps from tsx's cache

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = new Map([...B64].map((c, i) => [c, i]));

/** Segments of a source map's `mappings`: per generated line, [genCol, srcIdx, srcLine, srcCol] sorted by genCol. */
function decodeMappings(mappings: string): number[][][] {
  const lines: number[][][] = [];
  let srcIdx = 0;
  let srcLine = 0;
  let srcCol = 0;
  for (const line of mappings.split(';')) {
    const segs: number[][] = [];
    let genCol = 0;
    for (const seg of line.split(',')) {
      if (!seg) continue;
      const vals: number[] = [];
      let shift = 0;
      let value = 0;
      for (const ch of seg) {
        const d = B64_INDEX.get(ch)!;
        value += (d & 31) << shift;
        if (d & 32) shift += 5;
        else {
          vals.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      genCol += vals[0]!;
      if (vals.length >= 4) {
        srcIdx += vals[1]!;
        srcLine += vals[2]!;
        srcCol += vals[3]!;
        segs.push([genCol, srcIdx, srcLine, srcCol]);
      }
    }
    lines.push(segs);
  }
  return lines;
}

interface Transform {
  code: string;
  mtime: number;
  map: { sources: string[]; mappings: string };
  decoded?: number[][][];
}

let cache: Map<string, Transform[]> | undefined;
/** tsx's cached transforms, by absolute source path, newest first. */
function tsxTransforms(): Map<string, Transform[]> {
  if (cache) return cache;
  cache = new Map();
  const uid = process.geteuid ? process.geteuid() : userInfo().username;
  const dir = path.join(tmpdir(), `tsx-${uid}`);
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return cache;
  }
  for (const f of files) {
    try {
      const full = path.join(dir, f);
      const j = JSON.parse(readFileSync(full, 'utf8')) as Partial<Transform>;
      const src = j.map?.sources?.[0];
      if (typeof j.code !== 'string' || !src) continue;
      const key = src.startsWith('file:') ? fileURLToPath(src) : src;
      let l = cache.get(key);
      if (!l) cache.set(key, (l = []));
      l.push({ code: j.code, map: j.map!, mtime: statSync(full).mtimeMs });
    } catch {
      /* not a transform */
    }
  }
  for (const l of cache.values()) l.sort((a, b) => b.mtime - a.mtime);
  return cache;
}

const lineStart = (code: string, line: number): number => {
  let i = 0;
  for (let l = 0; l < line && i >= 0; l++) i = code.indexOf('\n', i) + 1;
  return i;
};

/** Maps a generated (0-based) position of `file` to its .ts source line (1-based), if a cached transform matches. */
function originalLine(file: string, fn: string, line: number, col: number): number | undefined {
  const candidates = tsxTransforms().get(file) ?? [];
  // The transform the process ran is the one whose code has this function at this position (V8
  // points at the function's start: its name, `async`, `(` of an arrow, …); else the newest.
  const at = (t: Transform): string => {
    const i = lineStart(t.code, line) + col;
    return t.code.slice(Math.max(0, i - fn.length - 12), i + fn.length + 24);
  };
  const t = (fn && candidates.find((c) => at(c).includes(fn))) || candidates[0];
  if (!t) return undefined;
  t.decoded ??= decodeMappings(t.map.mappings);
  const segs = t.decoded[line];
  if (!segs?.length) return undefined;
  let best: number[] | undefined;
  for (const s of segs) {
    if (s[0]! <= col) best = s;
    else break;
  }
  return (best ?? segs[0]!)[2]! + 1;
}

// ------------------------------------------------------------------ summary

const ROOT = process.cwd();

function locate(cf: CallFrame): string {
  if (!cf.url) return '';
  let file = cf.url;
  if (file.startsWith('file:')) file = fileURLToPath(file);
  const genLine = cf.lineNumber;
  if (/\.(c|m)?tsx?$/.test(file)) {
    const l = originalLine(file, cf.functionName, genLine, cf.columnNumber);
    const rel = path.relative(ROOT, file);
    return l !== undefined ? `${rel}:${l}` : `${rel}:gen:${genLine + 1}:${cf.columnNumber + 1}`;
  }
  const rel = path.isAbsolute(file) ? path.relative(ROOT, file) : file;
  return `${rel}:${genLine + 1}`;
}

/**
 * `window`: only samples taken within [from, to], in µs of the monotonic clock V8 stamps samples
 * with (CLOCK_MONOTONIC on Linux: `process.hrtime.bigint() / 1000n` in any process on the machine),
 * so start-up and shutdown can be left out.
 */
export function summarise(
  file: string,
  top = 15,
  window?: { from: number; to: number },
): { frames: Frame[]; totalMs: number; idleMs: number; byOwner: { owner: string; ms: number; busyPct: number }[] } {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    if (window && (t < window.from || t > window.to)) continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
  }
  const groups = new Map<string, { cf: CallFrame; us: number }>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const cf = byId.get(id)!.callFrame;
    total += us;
    if (cf.functionName === '(idle)') idle += us;
    const key = `${cf.functionName}|${cf.url}|${cf.lineNumber}|${cf.columnNumber}`;
    const g = groups.get(key);
    if (g) g.us += us;
    else groups.set(key, { cf, us });
  }
  // Self time by owner: the package or source directory of the frame, or, for native frames and
  // node's own JS (writev, streams, …), of the nearest caller in a package or in our sources, so
  // a socket write lands on whoever wrote (when the write happens in a later tick, it stays node's).
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const ownerOf = (url: string): string | undefined => {
    if (!url) return undefined;
    const f = url.startsWith('file:') ? fileURLToPath(url) : url;
    const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f);
    if (nm) return nm[1];
    if (f.startsWith('node:')) return undefined;
    const rel = path.relative(ROOT, f);
    return rel.startsWith('..')
      ? f
      : rel
          .split('/')
          .slice(0, rel.startsWith('src/') ? 2 : 1)
          .join('/');
  };
  const owners = new Map<string, number>();
  for (const [id, us] of self) {
    const name = byId.get(id)!.callFrame.functionName;
    if (name === '(idle)') continue;
    let owner: string | undefined;
    if (name === '(garbage collector)' || name === '(program)') owner = name;
    for (let n: number | undefined = id; !owner && n !== undefined; n = parent.get(n))
      owner = ownerOf(byId.get(n)!.callFrame.url);
    owner ??= byId.get(id)!.callFrame.url ? 'node internals' : 'native, under node internals only';
    owners.set(owner, (owners.get(owner) ?? 0) + us);
  }
  const byOwner = [...owners]
    .sort((a, b) => b[1] - a[1])
    .map(([owner, us]) => ({ owner, ms: us / 1000, busyPct: (us / (total - idle)) * 100 }));
  const frames = [...groups.values()]
    .filter((g) => g.cf.functionName !== '(idle)')
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((g) => ({
      functionName: g.cf.functionName || '(anonymous)',
      location: locate(g.cf),
      selfMs: g.us / 1000,
      pct: (g.us / total) * 100,
      busyPct: (g.us / (total - idle)) * 100,
    }));
  return { frames, totalMs: total / 1000, idleMs: idle / 1000, byOwner };
}

export function render(s: ReturnType<typeof summarise>, markdown = false): string {
  const out: string[] = [];
  if (markdown) {
    out.push('| # | function | file:line | self ms | % of samples | % of busy |', '|---|---|---|---:|---:|---:|');
    s.frames.forEach((f, i) =>
      out.push(
        `| ${i + 1} | \`${f.functionName}\` | ${f.location || '(native)'} | ${f.selfMs.toFixed(0)} | ${f.pct.toFixed(1)} | ${f.busyPct.toFixed(1)} |`,
      ),
    );
  } else {
    out.push(
      `${'#'.padStart(2)} ${'function'.padEnd(34)} ${'file:line'.padEnd(52)} ${'self ms'.padStart(8)} ${'%'.padStart(6)} ${'busy%'.padStart(6)}`,
    );
    s.frames.forEach((f, i) =>
      out.push(
        `${String(i + 1).padStart(2)} ${f.functionName.slice(0, 34).padEnd(34)} ${(f.location || '(native)').slice(-52).padEnd(52)} ${f.selfMs.toFixed(0).padStart(8)} ${f.pct.toFixed(1).padStart(6)} ${f.busyPct.toFixed(1).padStart(6)}`,
      ),
    );
  }
  const owners = s.byOwner.slice(0, 12).map((o) => `${o.owner} ${o.busyPct.toFixed(1)}%`);
  out.push(
    `${markdown ? '\n' : ''}Busy time by owner (native and node-internal frames charged to their nearest caller in a package or our sources): ${owners.join(', ')}`,
  );
  out.push(
    `${markdown ? '\n' : ''}sampled ${(s.totalMs / 1000).toFixed(1)} s, of which idle ${(s.idleMs / 1000).toFixed(1)} s (busy ${((s.totalMs - s.idleMs) / 1000).toFixed(1)} s)`,
  );
  return out.join('\n') + '\n';
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const file = args.find((a) => a.endsWith('.cpuprofile'));
  if (!file) {
    process.stderr.write(
      'usage: tsx bench/profile-summary.ts <file.cpuprofile> [--top 15] [--markdown] [--window fromUs,toUs]\n',
    );
    process.exit(2);
  }
  const i = args.indexOf('--top');
  const top = i >= 0 ? Number(args[i + 1]) : 15;
  const w = args.indexOf('--window');
  const [from, to] = w >= 0 ? args[w + 1]!.split(',').map(Number) : [];
  process.stdout.write(
    render(summarise(file, top, from !== undefined ? { from, to: to! } : undefined), args.includes('--markdown')),
  );
}

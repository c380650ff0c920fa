import { pathToFileURL } from 'node:url';
import { printCpuTable, type CpuRow } from './cpu.js';

/**
 * `npm run bench`: every benchmark section, bounded and on loopback, each printing Amebo's figure
 * next to a bare baseline (raw fastify / amqplib / undici) measured in the same run, with the ratio.
 */
export interface Row {
  metric: string;
  amebo: number;
  baseline: number;
  unit: string;
  /** Throughput-like rows: ratio = amebo / baseline; latency rows: ratio = amebo / baseline too, lower is better. */
  higherIsBetter?: boolean;
}
export interface Section {
  title: string;
  rows: Row[];
  notes: string[];
  /** The publish section: POST /v1/events events/s at 32 connections (the bridge section runs at half of it). */
  capacity?: number;
  /** CPU per event by process, stage by stage (see cpu.ts). */
  cpu?: CpuRow[];
}

const fmt = (n: number): string => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2));

export function print(sections: Section[]): void {
  for (const s of sections) {
    process.stdout.write(`\n## ${s.title}\n`);
    process.stdout.write(
      `${'metric'.padEnd(40)} ${'amebo'.padStart(12)} ${'baseline'.padStart(12)} ${'ratio'.padStart(8)}  unit\n`,
    );
    for (const r of s.rows) {
      const ratio = r.baseline ? r.amebo / r.baseline : NaN;
      process.stdout.write(
        `${r.metric.padEnd(40)} ${fmt(r.amebo).padStart(12)} ${fmt(r.baseline).padStart(12)} ${ratio.toFixed(2).padStart(8)}  ${r.unit}\n`,
      );
    }
    for (const n of s.notes) process.stdout.write(`  - ${n}\n`);
  }
  const cpu = sections.flatMap((s) => s.cpu ?? []);
  if (cpu.length) {
    process.stdout.write('\n## CPU per event, by process\n');
    printCpuTable(cpu);
    process.stdout.write(
      [
        '  - CPU µs per event from /proc/<pid>/stat utime+stime (CLK_TCK ticks). node = the measured node process(es): Amebo, or',
        '    the baseline server/consumer/publisher; pg = PostgreSQL backends of its database; rmq = the RabbitMQ node net of its',
        '    background rate (the lower of idle samples just before and after the stage); total = node + pg + rmq; redis = the',
        '    shared Redis server, net of its background (not in total); bench = this process (load generator / webhook receiver,',
        '    not in total); rmq raw = RabbitMQ before the background is taken off (a large gap: other work hit the broker).',
        '    Baseline rows are indented; ratio = events/s ÷ the baseline below it. CPU per event holds steady on a shared',
        '    machine; wall time and events/s do not.',
      ].join('\n') + '\n',
    );
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const only = process.argv.slice(2);
  const sections: Section[] = [];
  for (const name of ['publish', 'bridge', 'rpc']) {
    if (only.length && !only.includes(name)) continue;
    let mod: { run: (o?: { publishCapacity?: number }) => Promise<Section> };
    try {
      mod = (await import(`./${name}.js`)) as typeof mod;
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && String(err).includes(`${name}.`)) continue;
      throw err;
    }
    process.stderr.write(`running ${name} benchmark...\n`);
    const t = performance.now();
    // The bridge section measures latency at half of the publish capacity measured just before.
    const capacity = sections.find((x) => x.capacity)?.capacity;
    sections.push(await mod.run({ publishCapacity: capacity }));
    process.stderr.write(`${name}: ${((performance.now() - t) / 1000).toFixed(0)} s\n`);
  }
  print(sections);
  process.exit(0);
}

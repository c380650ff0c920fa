/**
 * RPC benchmark: the fabric's call path (mandatory, deadline-carrying calls; replies
 * confirmed before the call is acked) next to a bare amqplib request/reply loop measured in the same
 * run on the same broker. Both sides alternate in short slices so load from other processes on
 * the machine hits them alike. Bounded: a fixed number of sequential calls and fixed time windows.
 *
 * `npx tsx bench/rpc.ts` prints the table; `bench/run.ts` imports `run()`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { FabricConnector } from '../src/fabric/index.js';

interface Row {
  metric: string;
  amebo: number;
  baseline: number;
  unit: string;
  higherIsBetter?: boolean;
}
interface Section {
  title: string;
  rows: Row[];
  notes: string[];
}

const URL_ = process.env.AMEBO_BENCH_AMQP_URL ?? process.env.AMEBO_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const SEQ_CALLS = Number(process.env.AMEBO_BENCH_RPC_CALLS ?? 2000);
const TPUT_MS = Number(process.env.AMEBO_BENCH_RPC_MS ?? 5000);
const CONCURRENCY = 64;
const SLICES = 8;
const PREFETCH = 128;

type Caller = (x: number, y: number) => Promise<unknown>;

interface Side {
  call: Caller;
  close(): Promise<void>;
}

/** The bare loop: a queue, a consumer that replies with sendToQueue, a reply queue consumed no-ack. */
async function bare(tag: string): Promise<Side> {
  const opts = { noDelay: true };
  const sconn: ChannelModel = await amqp.connect(URL_, opts);
  const cconn: ChannelModel = await amqp.connect(URL_, opts);
  const sch: Channel = await sconn.createChannel();
  const q = `bench.bare.${tag}`;
  await sch.assertQueue(q, { durable: false, autoDelete: true });
  await sch.prefetch(PREFETCH);
  await sch.consume(q, (m: ConsumeMessage | null) => {
    if (!m) return;
    const { x, y } = JSON.parse(m.content.toString()) as { x: number; y: number };
    sch.sendToQueue(m.properties.replyTo as string, Buffer.from(JSON.stringify(x * y)), {
      correlationId: m.properties.correlationId as string,
    });
    sch.ack(m);
  });
  const cch: Channel = await cconn.createChannel();
  const { queue: replyTo } = await cch.assertQueue('', { exclusive: true, autoDelete: true });
  const pending = new Map<string, (v: unknown) => void>();
  await cch.consume(
    replyTo,
    (m) => {
      if (!m) return;
      const id = m.properties.correlationId as string;
      const r = pending.get(id);
      if (r) {
        pending.delete(id);
        r(JSON.parse(m.content.toString()));
      }
    },
    { noAck: true },
  );
  return {
    call: (x, y) =>
      new Promise((resolve) => {
        const id = randomUUID();
        pending.set(id, resolve);
        cch.publish('', q, Buffer.from(JSON.stringify({ x, y })), { correlationId: id, replyTo });
      }),
    close: async () => {
      await cconn.close();
      await sconn.close();
    },
  };
}

async function fabric(domain: string): Promise<Side> {
  const server = new FabricConnector({ amqpUrl: URL_, domain, type: 'bench', id: 's1' });
  await server.open();
  await server.rpcRegister({ multiply: ({ x, y }: { x: number; y: number }) => x * y }, { concurrency: PREFETCH });
  const client = new FabricConnector({ amqpUrl: URL_, domain, type: 'benchclient', id: 'c1' });
  await client.open();
  const proxy = await client.rpcProxy<{ multiply(a: { x: number; y: number }): number }>(domain, 's1', 'bench', {
    timeoutMs: 10_000,
  });
  return {
    call: (x, y) => proxy.multiply({ x, y }),
    close: async () => {
      await client.close();
      await server.close();
    },
  };
}

async function sequential(side: Side, n: number, into: number[]): Promise<void> {
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const r = await side.call(i, 2);
    into.push(Number(process.hrtime.bigint() - t0) / 1000);
    if (r !== i * 2) throw new Error(`wrong result ${String(r)}`);
  }
}

async function throughput(side: Side, ms: number): Promise<number> {
  const until = Date.now() + ms;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < until) {
      await side.call(3, 4);
      done++;
    }
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return done / (Number(process.hrtime.bigint() - t0) / 1e9);
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

export async function run(): Promise<Section> {
  const tag = randomBytes(4).toString('hex');
  const b = await bare(tag);
  const f = await fabric(`bench${tag}`);
  try {
    // Warm both paths (JIT, channel buffers) before measuring.
    await sequential(b, 300, []);
    await sequential(f, 300, []);
    await throughput(b, 300);
    await throughput(f, 300);
    const lb: number[] = [];
    const lf: number[] = [];
    const per = Math.ceil(SEQ_CALLS / SLICES);
    for (let i = 0; i < SLICES; i++) {
      await sequential(b, per, lb);
      await sequential(f, per, lf);
    }
    let tb = 0;
    let tf = 0;
    for (let i = 0; i < SLICES; i++) {
      tb += await throughput(b, TPUT_MS / SLICES);
      tf += await throughput(f, TPUT_MS / SLICES);
    }
    tb /= SLICES;
    tf /= SLICES;
    const rows: Row[] = [
      { metric: 'rpc round trip p50', amebo: pct(lf, 50), baseline: pct(lb, 50), unit: 'µs' },
      { metric: 'rpc round trip p99', amebo: pct(lf, 99), baseline: pct(lb, 99), unit: 'µs' },
      {
        metric: `rpc throughput (${CONCURRENCY} concurrent)`,
        amebo: tf,
        baseline: tb,
        unit: 'calls/s',
        higherIsBetter: true,
      },
    ];
    const r50 = rows[0]!.amebo / rows[0]!.baseline;
    const rt = tf / tb;
    return {
      title: 'RPC (fabric vs bare amqplib request/reply)',
      rows,
      notes: [
        `${lf.length} sequential calls per side in ${SLICES} alternating slices; throughput over ${TPUT_MS} ms per side, ${CONCURRENCY} calls in flight, prefetch ${PREFETCH} on both servers`,
        `fabric path (wire-compatible with amqp-fabric): per-service direct exchange, mandatory publish with expiration, From header and deadline timer, method queue with rpc.dlx; replies confirmed before the call is acked; bare: default exchange, no expiration, no confirms, immediate acks`,
        `round trip p50 ratio ${r50.toFixed(2)} (target <= 1.30): ${r50 <= 1.3 ? 'met' : 'NOT met'}; throughput ratio ${rt.toFixed(2)} (target >= 0.80): ${rt >= 0.8 ? 'met' : 'NOT met'}`,
      ],
    };
  } finally {
    await f.close();
    await b.close();
  }
}

function print(s: Section): void {
  const fmt = (n: number): string => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2));
  process.stdout.write(`\n## ${s.title}\n`);
  process.stdout.write(
    `${'metric'.padEnd(40)} ${'amebo'.padStart(12)} ${'baseline'.padStart(12)} ${'ratio'.padStart(8)}  unit\n`,
  );
  for (const r of s.rows)
    process.stdout.write(
      `${r.metric.padEnd(40)} ${fmt(r.amebo).padStart(12)} ${fmt(r.baseline).padStart(12)} ${(r.amebo / r.baseline).toFixed(2).padStart(8)}  ${r.unit}\n`,
    );
  for (const n of s.notes) process.stdout.write(`  - ${n}\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  run().then(
    (s) => {
      print(s);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}

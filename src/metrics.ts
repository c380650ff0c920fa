import cluster from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of this process (`GET /metrics`). */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'amebo_process_' });

const reg = { registers: [registry] };
export const metrics = {
  httpRequests: new Counter({
    name: 'amebo_http_requests_total',
    help: 'HTTP requests',
    labelNames: ['route', 'status'],
    ...reg,
  }),
  eventsAccepted: new Counter({ name: 'amebo_events_accepted_total', help: 'events committed to the outbox', ...reg }),
  duplicates: new Counter({
    name: 'amebo_events_duplicate_total',
    help: 'publishes answered with an existing event (deduper)',
    ...reg,
  }),
  publishFailures: new Counter({
    name: 'amebo_publish_unconfirmed_total',
    help: 'publishes not confirmed by the broker (left to the relay)',
    ...reg,
  }),
  amqpConnected: new Gauge({
    name: 'amebo_amqp_connected',
    help: '1 while the connection is up and set up, 0 while it reconnects',
    labelNames: ['connection'],
    ...reg,
  }),
  amqpReconnects: new Counter({
    name: 'amebo_amqp_connect_failures_total',
    help: 'failed attempts to connect to a node',
    labelNames: ['connection', 'node'],
    ...reg,
  }),
  amqpChannelsReady: new Gauge({
    name: 'amebo_amqp_channels_ready',
    help: '1 while a managed channel is up, 0 while it is rebuilt',
    labelNames: ['channel'],
    ...reg,
  }),
  publishBacklog: new Gauge({
    name: 'amebo_publish_backlog_mode',
    help: '1 while new events go through the outbox (in order) because a publish went unconfirmed',
    ...reg,
  }),
  relayPublished: new Counter({ name: 'amebo_relay_published_total', help: 'events published by the relay', ...reg }),
  groupCommitSize: new Histogram({
    name: 'amebo_group_commit_size',
    help: 'events per group commit',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500],
    ...reg,
  }),
  commitSeconds: new Histogram({
    name: 'amebo_group_commit_seconds',
    help: 'outbox INSERT latency',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
    ...reg,
  }),
  confirmSeconds: new Histogram({
    name: 'amebo_publish_confirm_seconds',
    help: 'broker confirm latency of the publish path',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
    ...reg,
  }),
  outboxPending: new Gauge({
    name: 'amebo_outbox_pending',
    help: 'events committed but not yet published (sampled by the relay)',
    ...reg,
  }),
  delivered: new Counter({
    name: 'amebo_deliveries_total',
    help: 'webhook/AMQP delivery outcomes',
    labelNames: ['subscription', 'outcome'],
    ...reg,
  }),
  inFlight: new Gauge({
    name: 'amebo_deliveries_in_flight',
    help: 'deliveries in flight',
    labelNames: ['subscription'],
    ...reg,
  }),
  deliverySeconds: new Histogram({
    name: 'amebo_delivery_seconds',
    help: 'webhook attempt latency',
    labelNames: ['subscription'],
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
    ...reg,
  }),
};

// With `--workers N` every worker counts its own share. A scrape lands on one worker, which asks
// the primary; the primary collects every worker's registry over the cluster IPC channel and
// answers with the sum (prom-client's AggregatorRegistry). Without a cluster: this process's own.
const ASK = 'amebo:metrics-req';
const ANSWER = 'amebo:metrics-res';
let clustered = false;
let asked = 0;
const waiting = new Map<number, (text: string | null) => void>();

/** In the cluster primary: answers workers' requests with the metrics of all workers. */
export function serveClusterMetrics(): void {
  const agg = new AggregatorRegistry();
  cluster.on('message', (worker, msg: { type?: string; id?: number }) => {
    if (msg?.type !== ASK) return;
    agg.clusterMetrics().then(
      (text) => worker.send({ type: ANSWER, id: msg.id, text }),
      () => worker.send({ type: ANSWER, id: msg.id, text: null }),
    );
  });
}

/** In a cluster worker: lets the primary read this worker's registry, and routes its answers. */
export function joinClusterMetrics(): void {
  if (clustered || !cluster.isWorker) return;
  clustered = true;
  new AggregatorRegistry(); // registers prom-client's worker-side listener
  AggregatorRegistry.setRegistries([registry]);
  process.on('message', (msg: { type?: string; id?: number; text?: string | null }) => {
    if (msg?.type !== ANSWER || msg.id === undefined) return;
    waiting.get(msg.id)?.(msg.text ?? null);
    waiting.delete(msg.id);
  });
}

/** The text `GET /metrics` answers: the whole cluster's when clustered (5 s bound), else this process's. */
export async function metricsText(): Promise<string> {
  if (clustered && process.send) {
    const id = ++asked;
    const text = await new Promise<string | null>((resolve) => {
      const t = setTimeout(() => {
        waiting.delete(id);
        resolve(null);
      }, 5000);
      waiting.set(id, (v) => {
        clearTimeout(t);
        resolve(v);
      });
      process.send!({ type: ASK, id });
    });
    if (text !== null) return text;
  }
  return registry.metrics();
}

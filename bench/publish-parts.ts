/**
 * `npx tsx bench/publish-parts.ts`: where the publish path's node CPU goes, stage by stage, in this
 * one process (read with process.cpuUsage, so only this process is counted). Each stage runs
 * BENCH_SECONDS (5) with 32 concurrent callers, on the same event body as `npm run bench -- publish`:
 *   1. pipeline: PublishPipeline.submit() of single events → group commit → broker confirm → mark,
 *      without HTTP (real PostgreSQL and RabbitMQ, a quorum queue bound to the exchange), replies on
 *      the commit and replies after the confirm, alternated twice;
 *   2. store only: the same pipeline with its publisher never ready, so events stay in the outbox;
 *   3. broker only: ConfirmPublisher.publish() of the event message, without PostgreSQL.
 * Amebo's whole node cost per event (`npm run bench -- publish`) minus stage 1 is what the HTTP
 * side (fastify, auth, validation, serialisation) costs.
 */
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import pg from 'pg';
import { AMQP_URL } from '../test/helpers/harness.js';
import { Broker } from '../src/broker/connection.js';
import { eventBody, eventProperties } from '../src/broker/message.js';
import { ConfirmPublisher } from '../src/broker/publisher.js';
import { createLogger } from '../src/log.js';
import { PublishPipeline, type PublishRequest } from '../src/publish.js';
import { createPool, migrate } from '../src/store/db.js';
import { uuidv7 } from '../src/ids.js';
import { background, meter, PG_ADMIN_URL } from './cpu.js';
import { orderPayload } from './payload.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CALLERS = 32;
const id = randomBytes(4).toString('hex');
const db = `amebo_parts_${id}`;
const exchange = `parts.${id}`;
const log = createLogger('warn');
const selfUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function stage(name: string, one: () => Promise<unknown>): Promise<void> {
  let n = 0;
  const end = performance.now() + SECONDS * 1000;
  const m = await meter({ node: [], self: true, db, background: await background(1000) });
  const c0 = selfUs();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (performance.now() < end) {
        await one();
        n++;
      }
    }),
  );
  const wall = performance.now() - t0;
  const us = selfUs() - c0;
  const c = await m.stop();
  process.stdout.write(
    `${name.padEnd(44)} ${String(n).padStart(7)} events ${Math.round(n / (wall / 1000))
      .toString()
      .padStart(6)}/s  node ${(us / n).toFixed(0).padStart(4)}  pg ${(c.pg / n).toFixed(0).padStart(4)}  rmq ${(
      c.rmq / n
    )
      .toFixed(0)
      .padStart(4)} µs/event\n`,
  );
}

const admin = new pg.Client(PG_ADMIN_URL);
await admin.connect();
await admin.query(`CREATE DATABASE ${db}`);
const pool = createPool({ url: `${PG_ADMIN_URL.replace(/\/[^/]*$/, '')}/${db}`, max: 8, logger: log });
const setup = await amqp.connect(AMQP_URL);
const sch = await setup.createChannel();
const broker = new Broker({ url: AMQP_URL, logger: log });
try {
  await migrate(pool, log);
  await sch.assertExchange(exchange, 'topic', { durable: false, autoDelete: false });
  await sch.assertQueue(`${exchange}.q`, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  await sch.bindQueue(`${exchange}.q`, exchange, '#');
  await broker.open(10_000);
  const publisher = new ConfirmPublisher(broker, { window: 2048, logger: log });
  await publisher.start();
  // BENCH_FLUSHES: group commits in flight at once (the pipeline's maxFlushes), to compare settings;
  // each with replies on the commit (the default) and after the confirm (Prefer: wait).
  const flushes = (process.env.BENCH_FLUSHES ?? '2').split(',').map(Number);
  const variants = flushes.flatMap((maxFlushes) =>
    [false, true].map((awaitConfirm) => ({
      label: `${maxFlushes} flushes, reply ${awaitConfirm ? 'after confirm' : 'on commit'}`,
      pipeline: new PublishPipeline({
        pool,
        publisher,
        exchange,
        restrictedExchange: exchange,
        logger: log,
        maxFlushes,
        awaitConfirm,
      }),
    })),
  );
  const pipelines = variants.map((v) => v.pipeline);
  const pipeline = pipelines[0]!;
  const payloadJson = JSON.stringify(orderPayload());
  const req = (): PublishRequest => ({
    action: 'order.placed',
    application: 'shop',
    schemaVersion: 1,
    payloadJson,
    deduper: null,
    deliverAt: null,
  });
  await stage('warm-up (pipeline)', () => pipeline.submit([req()]));
  for (let round = 0; round < 2; round++)
    for (const v of variants) await stage(`1. pipeline (${v.label})`, () => v.pipeline.submit([req()]));
  await stage('3. broker only: publish + confirm', () => {
    const eid = uuidv7();
    const msg = {
      id: eid,
      action: 'order.placed',
      application: 'shop',
      payloadJson,
      deduper: null,
      conversationId: eid,
      createdAt: new Date(),
      schemaVersion: 1,
    };
    return publisher.publish(exchange, 'order.placed', eventBody(msg), eventProperties(msg));
  });
  // Store only: the same pipeline, its publisher closed (never ready), so no live publish.
  await publisher.close();
  await stage('2. store only: group commit (no publish)', () => pipeline.submit([req()]));
  for (const p of pipelines) await p.close();
} finally {
  await sch.deleteQueue(`${exchange}.q`).catch(() => undefined);
  await sch.deleteExchange(exchange).catch(() => undefined);
  await setup.close().catch(() => undefined);
  await broker.close().catch(() => undefined);
  await pool.end();
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.end();
}
process.exit(0);

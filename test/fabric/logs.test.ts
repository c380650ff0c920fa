/** Remote logs: a pino destination publishing amqp-fabric-shaped records, a filtered tail, and never blocking. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import { pino } from 'pino';
import { LogDestination, type LogRecord } from '../../src/fabric/index.js';
import { Link } from '../../src/fabric/link.js';
import { AMQP_URL, open, uniqueDomain, waitFor } from './helpers.js';

test('records arrive with Python level names and service headers; the tail filters by service and level', async (t) => {
  const domain = uniqueDomain();
  const svc = await open(t, { domain, type: 'encoder', id: 'e1', keepAliveMs: 0 });
  const other = await open(t, { domain, type: 'encoder', id: 'e2', keepAliveMs: 0 });
  const tail = await open(t, { domain, type: 'cli', id: 'tail', keepAliveMs: 0 });

  const warnings: LogRecord[] = [];
  const everything: LogRecord[] = [];
  await tail.subscribeLogs({ domain, service: 'e1', level: 'warn' }, (r) => void warnings.push(r));
  await tail.subscribeLogs({ domain }, (r) => void everything.push(r));
  // amqp-fabric has no consumer: its test binds a queue with no arguments; the body must be a JSON string
  const conn = await amqp.connect(AMQP_URL);
  t.after(() => conn.close());
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  await ch.bindQueue(queue, `${domain}.log.records`, '', {});
  const raw: amqp.ConsumeMessage[] = [];
  await ch.consume(queue, (m) => m && raw.push(m), { noAck: true });

  const log = pino({ level: 'debug', name: 'encoder' }, svc.logDestination());
  const log2 = pino({ level: 'debug' }, other.logDestination());
  log.debug('starting');
  log.info({ job: 42 }, 'encoding %s', 'movie.mp4');
  log.warn('disk low é');
  log.error({ err: new Error('codec missing') }, 'job failed');
  log.fatal('giving up');
  log2.error('not from e1');

  await waitFor(() => everything.length >= 6 && warnings.length >= 3 && raw.length >= 6, 30_000, 'log records');
  // Nothing else comes: a later record of e1 reaches the tail, the filtered tail and the raw queue
  // after exactly these (e1's records travel in order); then it is set aside.
  log.fatal('marker');
  const isMarker = (r: LogRecord) => r.serviceId === 'e1' && r.message === 'marker';
  await waitFor(
    () => everything.some(isMarker) && warnings.some(isMarker) && raw.some((m) => m.content.toString() === '"marker"'),
    30_000,
    'the marker record',
  );
  for (const list of [everything, warnings]) list.splice(list.findIndex(isMarker), 1);
  raw.splice(
    raw.findIndex((m) => m.content.toString() === '"marker"'),
    1,
  );
  assert.equal(everything.length, 6);
  assert.equal(raw.length, 6);
  assert.deepEqual(
    warnings.map((r) => [r.serviceId, r.level, r.message]),
    [
      ['e1', 'WARNING', 'disk low é'],
      ['e1', 'ERROR', 'job failed'],
      ['e1', 'CRITICAL', 'giving up'],
    ],
  );
  const e1 = everything.filter((r) => r.serviceId === 'e1');
  assert.deepEqual(
    e1.map((r) => r.level),
    ['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'],
  );
  const info = e1[1]!;
  assert.equal(info.message, 'encoding movie.mp4');
  assert.equal(info.serviceType, 'encoder');
  assert.equal(info.domain, domain);
  assert.ok(info.time && !Number.isNaN(Date.parse(info.time)));
  assert.deepEqual(JSON.parse(info.headers.extra as string), { job: 42 });
  assert.match(e1[3]!.headers.error as string, /^Error: codec missing/);

  const warnRaw = raw.find((m) => m.properties.headers?.level_name === 'WARNING')!;
  // json.dumps(message) with Python's default ensure_ascii
  assert.equal(warnRaw.content.toString(), '"disk low \\u00e9"');
  for (const k of ['service_id', 'service_type', 'level_name'])
    assert.equal(typeof warnRaw.properties.headers![k], 'string');
});

test('the destination never blocks or throws: records wait in a bounded buffer, the rest are dropped and counted', () => {
  // A link never opened: its channel is never built, so nothing can be sent.
  const link = new Link({
    url: 'amqp://127.0.0.1:1',
    name: 'never',
    logger: pino({ level: 'silent' }),
    heartbeatSeconds: 10,
    reconnectInitialDelayMs: 100,
    reconnectMaxDelayMs: 1000,
  });
  const dest = new LogDestination(
    link,
    pino({ level: 'silent' }),
    { domain: 'd', type: 't', id: 'i' },
    { maxBuffer: 5 },
  );
  const log = pino({ level: 'info' }, dest);
  // Synchronous writes that return: none waits for the link (how fast is for `npm run bench`).
  for (let i = 0; i < 1000; i++) log.info({ i }, 'record %d', i);
  assert.equal(dest.buffered, 5);
  assert.equal(dest.dropped, 995);
  assert.equal(dest.sent, 0);
  assert.equal(dest.write('not json'), true);
  assert.equal(dest.dropped, 996);
});

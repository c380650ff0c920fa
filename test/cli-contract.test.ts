/**
 * The CLI contract, command by command: good input, a missing argument, a malformed argument, and
 * Amebo (or the broker, or a store) down. Each row asserts the exit code (0 done, 1 Amebo answered an
 * error, 2 bad usage, 3 unreachable), where the output went, and that no stack trace is printed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { destroy, eventually, http, start, testEnv, type Running } from './helpers/harness.js';
import { runCli } from './helpers/cli.js';
import { FabricConnector } from '../src/fabric/index.js';
import { bridgeStarter } from '../bridge/index.js';
import { deliveryPlugin } from '../src/plugins.js';
import { hex } from './helpers/harness.js';

const env = testEnv();
let srv: Running;
let fabric: FabricConnector;
let event = '';
let subscription = '';
const domain = `cli${hex()}`;
const DOWN_HTTP = 'http://127.0.0.1:9'; // nothing listens on the discard port
let downAmqp = '';
let busyPort = 0;
let busy: net.Server;

function vars(extra: Record<string, string> = {}): Record<string, string> {
  return {
    AMEBO_URL: srv.url + '/', // a trailing slash is fine
    AMEBO_AMQP_URL: env.cfg.amqpUrl,
    AMEBO_DATABASE_URL: env.cfg.databaseUrl,
    AMEBO_REDIS_URL: env.cfg.redisUrl,
    AMEBO_PREFIX: env.cfg.prefix,
    AMEBO_ADMIN_TOKEN: env.adminToken,
    AMEBO_SECRET_KEY: env.cfg.secretKey,
    AMEBO_STATE_DIR: env.cfg.stateDir,
    AMEBO_LOG_LEVEL: 'warn',
    NO_COLOR: '1',
    ...extra,
  };
}

before(async () => {
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] });
  const APP: [string, string] = ['shop', 'shop-secret-0123456789'];
  await http(srv.url, env, 'POST', '/v1/applications', { application: 'shop', secret: APP[1] }, 'admin');
  await http(
    srv.url,
    env,
    'POST',
    '/v1/actions',
    {
      action: 'order.placed',
      application: 'shop',
      schemata: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] },
    },
    APP,
  );
  const s = await http(
    srv.url,
    env,
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'audit', action: 'order.placed', transport: 'amqp' },
    'admin',
  );
  subscription = s.body.id;
  const hook = await http(
    srv.url,
    env,
    'POST',
    '/v1/subscriptions',
    { application: 'shop', subscription: 'hook', action: 'order.placed', handler: 'http://127.0.0.1:9/hook' },
    'admin',
  );
  assert.equal(hook.status, 201, JSON.stringify(hook.body));
  assert.equal((await http(srv.url, env, 'POST', `/v1/subscriptions/${hook.body.id}/pause`, {}, 'admin')).status, 200);
  event = (await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 1 } }, APP)).body
    .event;
  fabric = new FabricConnector({ amqpUrl: env.cfg.amqpUrl, domain, type: 'calc', id: 'c1', keepAliveMs: 500 });
  await fabric.open();
  await fabric.rpcRegister({ add: ({ x, y }: { x: number; y: number }) => x + y });
  busy = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => busy.once('listening', r));
  busyPort = (busy.address() as net.AddressInfo).port;
  const closed = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => closed.once('listening', r));
  downAmqp = `amqp://guest:guest@127.0.0.1:${(closed.address() as net.AddressInfo).port}`;
  await new Promise((r) => closed.close(r));
});
after(async () => {
  await fabric?.close();
  busy?.close();
  await srv?.close();
  await destroy(env);
});

interface Row {
  name: string;
  args: () => string[];
  env?: () => Record<string, string>;
  exit: 0 | 1 | 2 | 3;
  /** Expected on stdout / stderr. */
  out?: RegExp;
  err?: RegExp;
}

const payloadFile = path.join(tmpdir(), `amebo-cli-${hex()}.json`);
const missingFile = path.join(tmpdir(), `amebo-cli-missing-${hex()}.json`);

const ROWS: Row[] = [
  // publish
  { name: 'publish: good', args: () => ['publish', 'order.placed', '{"n": 2}'], exit: 0, out: /^accepted \S+/ },
  {
    name: 'publish: @file',
    args: () => ['publish', 'order.placed', `@${payloadFile}`, '--json'],
    exit: 0,
    out: /"event"/,
  },
  { name: 'publish: missing action', args: () => ['publish'], exit: 2, err: /missing required argument/ },
  { name: 'publish: malformed JSON', args: () => ['publish', 'order.placed', '{n:'], exit: 2, err: /not valid JSON/ },
  {
    name: 'publish: missing @file',
    args: () => ['publish', 'order.placed', `@${missingFile}`],
    exit: 2,
    err: /cannot read the payload file .*ENOENT/,
  },
  {
    name: 'publish: --application without --secret',
    args: () => ['publish', 'order.placed', '--application', 'shop'],
    exit: 2,
    err: /--application and --secret go together/,
  },
  {
    name: 'publish: bad --timeout',
    args: () => ['publish', 'order.placed', '--timeout', 'soon'],
    exit: 2,
    err: /--timeout: invalid duration/,
  },
  {
    name: 'publish: schema violation lists the field',
    args: () => ['publish', 'order.placed', '{"n": "x"}'],
    exit: 1,
    err: /PAYLOAD_INVALID[\s\S]*\/payload\/n: must be integer/,
  },
  {
    name: 'publish: --json error on stdout',
    args: () => ['publish', 'order.placed', '{}', '--json'],
    exit: 1,
    out: /^\{"error":\{"code":"AMEBO_ERR_PAYLOAD_INVALID"/,
  },
  {
    name: 'publish: Amebo down',
    args: () => ['publish', 'order.placed', '{"n": 1}'],
    env: () => ({ AMEBO_URL: DOWN_HTTP }),
    exit: 3,
    err: /cannot reach Amebo at http:\/\/127\.0\.0\.1:9/,
  },
  {
    name: 'publish: Amebo down, --json',
    args: () => ['publish', 'order.placed', '{"n": 1}', '--json'],
    env: () => ({ AMEBO_URL: DOWN_HTTP }),
    exit: 3,
    out: /^\{"error":\{"code":"UNREACHABLE"/,
  },
  // inspect
  { name: 'inspect event: good', args: () => ['inspect', 'event', event], exit: 0, out: /order\.placed/ },
  { name: 'inspect event: missing id', args: () => ['inspect', 'event'], exit: 2, err: /missing required argument/ },
  { name: 'inspect event: unknown id', args: () => ['inspect', 'event', 'nope'], exit: 1, err: /EVENT_NOT_FOUND/ },
  {
    name: 'inspect event: Amebo down',
    args: () => ['inspect', 'event', event],
    env: () => ({ AMEBO_URL: DOWN_HTTP }),
    exit: 3,
    err: /cannot reach Amebo/,
  },
  {
    name: 'inspect subscription: good',
    args: () => ['inspect', 'subscription', subscription],
    exit: 0,
    out: /shop\/audit/,
  },
  {
    name: 'inspect subscription: by name, with health',
    args: () => ['inspect', 'subscription', 'shop/audit'],
    exit: 0,
    out: /shop\/audit [\s\S]*backlog: \d+ {2}retrying: 0/,
  },
  {
    name: 'inspect subscription: --pending, oldest first',
    args: () => ['inspect', 'subscription', 'shop/hook', '--pending', '--count', '1', '--json'],
    exit: 0,
    get out() {
      return new RegExp(`"pending":\\[\\{"id":"${event}"`); // read when the row runs
    },
  },
  {
    name: 'inspect subscription: --pending of a native consumer',
    args: () => ['inspect', 'subscription', 'shop/audit', '--pending'],
    exit: 1,
    err: /consumed natively/,
  },
  {
    name: 'inspect subscription: bad --window',
    args: () => ['inspect', 'subscription', 'shop/audit', '--window', '2d'],
    exit: 2,
    err: /--window must be 5m, 1h or 24h/,
  },
  { name: 'subscriptions: good', args: () => ['subscriptions'], exit: 0, out: /shop\/audit\s+active\s+\d+/ },
  {
    name: 'subscriptions: Amebo down',
    args: () => ['subscriptions'],
    env: () => ({ AMEBO_URL: DOWN_HTTP }),
    exit: 3,
    err: /cannot reach Amebo/,
  },
  { name: 'inspect subscription: missing', args: () => ['inspect', 'subscription'], exit: 2, err: /missing required/ },
  {
    name: 'inspect: no token',
    args: () => ['inspect', 'event', event],
    env: () => ({ AMEBO_ADMIN_TOKEN: '', AMEBO_STATE_DIR: tmpdir() + `/none-${hex()}` }),
    exit: 2,
    err: /no admin token/,
  },
  // dead letters, resurrect, replay
  { name: 'dead-letters: good', args: () => ['dead-letters', subscription, '--json'], exit: 0, out: /"count":0/ },
  {
    name: 'dead-letters: bad --limit',
    args: () => ['dead-letters', subscription, '--limit', '0'],
    exit: 2,
    err: /--limit must be a positive integer/,
  },
  { name: 'dead-letters: missing', args: () => ['dead-letters'], exit: 2, err: /missing required argument/ },
  {
    name: 'dead-letters: Amebo down',
    args: () => ['dead-letters', subscription],
    env: () => ({ AMEBO_URL: DOWN_HTTP }),
    exit: 3,
    err: /cannot reach Amebo/,
  },
  { name: 'resurrect: good', args: () => ['resurrect', subscription], exit: 0, out: /resurrected 0/ },
  {
    name: 'resurrect: --since a duration ago',
    args: () => ['resurrect', subscription, '--since', '2h'],
    exit: 0,
    out: /resurrected 0 \(died since \d{4}-.*; 0 older left\)/,
  },
  {
    name: 'resurrect: malformed --since',
    args: () => ['resurrect', subscription, '--since', 'last tuesday'],
    exit: 2,
    err: /--since: invalid duration/,
  },
  {
    name: 'resurrect: bad --count',
    args: () => ['resurrect', subscription, '--count', 'all'],
    exit: 2,
    err: /--count must be a positive integer/,
  },
  { name: 'replay: missing --from', args: () => ['replay', subscription], exit: 2, err: /--from/ },
  {
    name: 'replay: malformed --from',
    args: () => ['replay', subscription, '--from', 'yesterday'],
    exit: 2,
    err: /RFC 3339/,
  },
  {
    name: 'replay: unknown subscription',
    args: () => ['replay', '00000000-0000-7000-8000-000000000000', '--from', '2020-01-01T00:00:00Z'],
    exit: 1,
    err: /SUBSCRIPTION_NOT_FOUND/,
  },
  // monitor
  {
    name: 'monitor: bad --count',
    args: () => ['monitor', '--count', 'x'],
    exit: 2,
    err: /--count must be a positive integer/,
  },
  { name: 'monitor: bad pattern', args: () => ['monitor', 'a..b', '--count', '1'], exit: 2, err: /refused: 400/ },
  {
    name: 'monitor: bad --timeout',
    args: () => ['monitor', '--timeout', '10 parsecs'],
    exit: 2,
    err: /invalid duration/,
  },
  {
    name: 'monitor: Amebo down',
    args: () => ['monitor', '--count', '1'],
    env: () => ({ AMEBO_URL: DOWN_HTTP }),
    exit: 3,
    err: /cannot reach Amebo/,
  },
  // fabric: call, services, logs
  {
    name: 'call: good',
    args: () => ['call', domain, 'calc', 'c1', 'add', '{"x": 2, "y": 3}', '--json'],
    exit: 0,
    out: /^5\n$/,
  },
  {
    name: 'call: missing method',
    args: () => ['call', domain, 'calc', 'c1'],
    exit: 2,
    err: /missing required argument/,
  },
  { name: 'call: malformed JSON', args: () => ['call', domain, 'calc', 'c1', 'add', '{x'], exit: 2, err: /not JSON/ },
  {
    name: 'call: bad --timeout',
    args: () => ['call', domain, 'calc', 'c1', 'add', '--timeout', 'x'],
    exit: 2,
    err: /invalid duration/,
  },
  {
    name: 'call: broker down',
    args: () => ['call', domain, 'calc', 'c1', 'add', '{}', '--timeout', '2s'],
    env: () => ({ AMEBO_AMQP_URL: downAmqp }),
    exit: 3,
    err: /cannot reach RabbitMQ/,
  },
  {
    name: 'services: good',
    args: () => ['services', '--domain', domain, '--wait', '1s'],
    exit: 0,
    out: new RegExp(`${domain}\\.calc\\.c1`),
  },
  { name: 'services: bad --wait', args: () => ['services', '--wait', 'later'], exit: 2, err: /invalid duration/ },
  {
    name: 'services: broker down',
    args: () => ['services', '--wait', '200ms'],
    env: () => ({ AMEBO_AMQP_URL: downAmqp }),
    exit: 3,
    err: /cannot reach RabbitMQ/,
  },
  { name: 'logs: good', args: () => ['logs', '--domain', domain, '--timeout', '300ms'], exit: 0 },
  { name: 'logs: missing --domain', args: () => ['logs'], exit: 2, err: /--domain/ },
  {
    name: 'logs: bad --count',
    args: () => ['logs', '--domain', domain, '--count', '0'],
    exit: 2,
    err: /--count must be a positive integer/,
  },
  {
    name: 'logs: broker down',
    args: () => ['logs', '--domain', domain, '--timeout', '1s'],
    env: () => ({ AMEBO_AMQP_URL: downAmqp }),
    exit: 3,
    err: /cannot reach RabbitMQ/,
  },
  // config, migrate, serve, rotate-key
  {
    name: 'config: good',
    args: () => ['config', '--prefix', 'from-flag'],
    exit: 0,
    out: /AMEBO_PREFIX\s+"from-flag" \(flag\)/,
  },
  {
    name: 'config: malformed env',
    args: () => ['config'],
    env: () => ({ AMEBO_WORKERS: 'two' }),
    exit: 2,
    err: /AMEBO_WORKERS must be an integer/,
  },
  {
    name: 'config: secrets hidden',
    args: () => ['config', '--json'],
    exit: 0,
    out: /"AMEBO_ADMIN_TOKEN","value":"\(set\)","source":"env"/,
  },
  { name: 'migrate: good', args: () => ['migrate'], exit: 0, out: /migrations applied/ },
  {
    name: 'migrate: PostgreSQL down',
    args: () => ['migrate'],
    env: () => ({ AMEBO_DATABASE_URL: 'postgres://postgres@127.0.0.1:9/x' }),
    exit: 3,
    err: /PostgreSQL is unreachable/,
  },
  { name: 'serve: malformed --workers', args: () => ['serve', '--workers', 'two'], exit: 2, err: /AMEBO_WORKERS/ },
  {
    name: 'serve: busy port',
    args: () => ['serve', '--address', `127.0.0.1:${busyPort}`, '--role', 'api'],
    exit: 2,
    err: /cannot listen on .*address is in use.*--address/,
  },
  {
    name: 'serve: RabbitMQ down',
    args: () => ['serve', '--address', '127.0.0.1:0'],
    env: () => ({ AMEBO_AMQP_URL: downAmqp }),
    exit: 3,
    err: /RabbitMQ is unreachable/,
  },
  {
    name: 'rotate-key: PostgreSQL down',
    args: () => ['rotate-key'],
    env: () => ({ AMEBO_DATABASE_URL: 'postgres://postgres@127.0.0.1:9/x' }),
    exit: 3,
    err: /PostgreSQL is unreachable/,
  },
  { name: 'unknown command', args: () => ['frobnicate'], exit: 2, err: /too many arguments for 'serve'/ },
  { name: 'unknown option', args: () => ['publish', 'order.placed', '--frob'], exit: 2, err: /unknown option/ },
  { name: 'help', args: () => ['--help'], exit: 0, out: /Usage: amebo/ },
];

test('the CLI contract: every command × good, missing, malformed, down', async () => {
  await writeFile(payloadFile, '{"n": 3}');
  const failures: string[] = [];
  // A few at a time: each row is a node process.
  const queue = [...ROWS];
  const worker = async (): Promise<void> => {
    for (let r = queue.shift(); r; r = queue.shift()) {
      const p = runCli(r.args(), vars(r.env?.() ?? {}), 60_000);
      const code = await p.done;
      const [o, e] = [p.out(), p.err()];
      const why: string[] = [];
      if (code !== r.exit) why.push(`exit ${code}, want ${r.exit}`);
      if (r.out && !r.out.test(o)) why.push(`stdout ${JSON.stringify(o.slice(0, 300))} !~ ${r.out}`);
      if (r.err && !r.err.test(e)) why.push(`stderr ${JSON.stringify(e.slice(0, 300))} !~ ${r.err}`);
      if (/\n\s+at .+:\d+:\d+\)?/.test(o + e)) why.push(`a stack trace: ${JSON.stringify((o + e).slice(0, 400))}`);
      if (why.length) failures.push(`${r.name}: ${why.join('; ')}`);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  assert.deepEqual(failures, []);
});

test('monitor --save writes one file per message, numbered in arrival order', async () => {
  const dir = path.join(tmpdir(), `amebo-monitor-${hex()}`);
  const mon = runCli(['monitor', 'order.*', '--count', '2', '--save', dir], vars(), 60_000);
  await eventually(() => mon.err().includes('monitoring order.*'), 30_000);
  const APP: [string, string] = ['shop', 'shop-secret-0123456789'];
  const e = await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 42 } }, APP);
  assert.equal(e.status, 202);
  const e2 = await http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload: { n: 43 } }, APP);
  assert.equal(await mon.done, 0, mon.err());
  const files = (await readdir(dir)).sort();
  assert.equal(files.length, 2, files.join(', '));
  assert.match(files[0]!, new RegExp(`^000001-event-${e.body.event}\\.json$`));
  assert.match(files[1]!, new RegExp(`^000002-event-${e2.body.event}\\.json$`));
  const saved = JSON.parse(await readFile(path.join(dir, files[0]!), 'utf8'));
  assert.deepEqual(saved.event.payload, { n: 42 });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { request } from 'undici';
import { destroy, eventually, testEnv } from './helpers/harness.js';
import { runCli } from './helpers/cli.js';

const run = runCli;

const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });

function envVars(e: ReturnType<typeof testEnv>, extra: Record<string, string> = {}): Record<string, string> {
  return {
    AMEBO_AMQP_URL: e.cfg.amqpUrl,
    AMEBO_DATABASE_URL: e.cfg.databaseUrl,
    AMEBO_REDIS_URL: e.cfg.redisUrl,
    AMEBO_PREFIX: e.cfg.prefix,
    AMEBO_ADMIN_TOKEN: e.adminToken,
    AMEBO_SECRET_KEY: e.cfg.secretKey,
    AMEBO_STATE_DIR: e.cfg.stateDir,
    AMEBO_LOG_LEVEL: 'warn',
    ...extra,
  };
}

test('an unreachable store is named with its URL and how to start it; no stack trace', async () => {
  const e = testEnv();
  const port = await freePort();
  // The three side by side: each waits out its store's connect timeout.
  const stores = [
    ['AMEBO_AMQP_URL', 'RabbitMQ', `amqp://guest:guest@127.0.0.1:${port}`],
    ['AMEBO_REDIS_URL', 'Redis', `redis://127.0.0.1:${port}`],
    ['AMEBO_DATABASE_URL', 'PostgreSQL', `postgres://postgres@127.0.0.1:${port}/x`],
  ] as const;
  await Promise.all(
    stores.map(async ([k, service, url]) => {
      const p = run(['serve', '--address', '127.0.0.1:0'], envVars(e, { [k]: url }));
      const code = await p.done;
      assert.equal(code, 3, p.err());
      assert.match(p.err(), new RegExp(`${service} is unreachable at .*127\\.0\\.0\\.1:${port}`));
      assert.match(p.err(), /Start it with: /);
      assert.doesNotMatch(p.err(), /\n\s+at /, 'no stack trace');
      assert.doesNotMatch(p.err(), /guest:guest/, 'credentials are redacted');
    }),
  );
  await destroy(e);
});

test('a bad flag value is a clear configuration error', async () => {
  const p = run(['serve', '--workers', 'two'], {});
  assert.equal(await p.done, 2);
  assert.match(p.err(), /AMEBO_WORKERS must be an integer/);
});

test("seed 000's `amebo --workers 2 --address HOST:PORT` starts two workers sharing the port, and SIGTERM drains", async () => {
  const e = testEnv();
  const port = await freePort();
  const p = run(['--workers', '2', '--address', `127.0.0.1:${port}`], envVars(e), 200_000);
  try {
    const pids = new Set<number>();
    // Two workers each compile and start every role: ~25 s on a loaded 2-core machine. The bound
    // is a hang guard; a worker that died says why (its stderr).
    await eventually(
      async () => {
        if (p.child.exitCode !== null) throw new Error(`amebo exited ${p.child.exitCode}: ${p.err()}`);
        const r = await request(`http://127.0.0.1:${port}/health`, { reset: true, headersTimeout: 2000 });
        const body = (await r.body.json()) as { pid: number };
        pids.add(body.pid);
        return pids.size >= 2;
      },
      120_000,
      50,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n--- amebo stderr ---\n${p.err().slice(-3000)}`);
    });
    const ready = await request(`http://127.0.0.1:${port}/ready`);
    assert.equal(ready.statusCode, 200, await ready.body.text());

    // /metrics counts the whole cluster, whichever worker answers the scrape.
    const post = async (path: string, body: unknown, auth: string) => {
      const r = await request(`http://127.0.0.1:${port}${path}`, {
        method: 'POST',
        reset: true, // a new connection each time: the primary spreads them over the workers
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      const text = await r.body.text();
      assert.ok(r.statusCode < 300, `${path}: ${r.statusCode} ${text}`);
    };
    const admin = `Bearer ${e.adminToken}`;
    const app = `Basic ${Buffer.from('w:w-secret-0123456789').toString('base64')}`;
    await post('/v1/applications', { application: 'w', secret: 'w-secret-0123456789' }, admin);
    await post('/v1/actions', { action: 'w.tick', application: 'w', schemata: {} }, app);
    for (let i = 0; i < 12; i++) await post('/v1/events', { action: 'w.tick', payload: { i } }, app);
    for (let scrape = 0; scrape < 3; scrape++) {
      const m = await request(`http://127.0.0.1:${port}/metrics`, { reset: true });
      const text = await m.body.text();
      assert.match(text, /^amebo_events_accepted_total 12$/m, 'the sum over both workers');
    }
  } finally {
    p.child.kill('SIGTERM');
    assert.equal(await p.done, 0, p.err());
    await destroy(e);
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { destroy, eventually, http, start, testEnv, type Running } from './helpers/harness.js';

// AMEBO_REDIS_SENTINELS: Amebo finds Redis through a real Sentinel (one that watches the shared
// Redis on 6379; it only observes, it never fails anything over).
const hasRedis = spawnSync('redis-server', ['--version']).status === 0;
const PORT = 26_379 + Math.floor(Math.random() * 500);
const NAME = `amebo-probe-${process.pid}`;
let sentinel: ChildProcess | null = null;
const spawned: ChildProcess[] = [];
const env = testEnv({ redisSentinels: `127.0.0.1:${PORT}`, redisSentinelName: NAME });
let srv: Running | undefined;

before(async () => {
  if (!hasRedis) return;
  const dir = mkdtempSync(path.join(tmpdir(), 'amebo-sentinel-'));
  const conf = path.join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [`port ${PORT}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor ${NAME} 127.0.0.1 6379 1`, ''].join('\n'),
  );
  sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  const probe = new Redis({ port: PORT, lazyConnect: true, maxRetriesPerRequest: 0 });
  await eventually(async () => {
    await probe.connect().catch(() => undefined);
    const r = (await probe.call('SENTINEL', 'get-master-addr-by-name', NAME)) as string[] | null;
    return r?.[1] === '6379';
  }, 30_000);
  probe.disconnect();
});
after(async () => {
  await srv?.close();
  sentinel?.kill('SIGKILL');
  for (const c of spawned) c.kill('SIGKILL');
  await destroy(env);
  await destroy(secureEnv);
});

test(
  'AMEBO_REDIS_SENTINELS: Amebo asks the Sentinel for the master and works through it',
  { skip: hasRedis ? false : 'no redis-server here to run a Sentinel' },
  async () => {
    srv = await start(env);
    const r = srv.amebo.redis;
    assert.equal(await r.ping(), 'PONG');
    assert.equal((r.options as { sentinels?: unknown[] }).sentinels?.length, 1, 'connected through the Sentinel');
    const ready = await http(srv.url, env, 'GET', '/ready');
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
  },
);

// The production shape: a Redis of the test's own that only speaks TLS and only to an ACL user (the
// default user off), found through a Sentinel that only speaks TLS and requires its own password.
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
const secure = {
  dir: '',
  redisPort: 16_400 + Math.floor(Math.random() * 500),
  sentinelPort: 27_000 + Math.floor(Math.random() * 500),
  name: `amebo-tls-${process.pid}`,
};
const secureEnv = testEnv();

/** A CA and a certificate for 127.0.0.1 signed by it, in `dir`. */
function makeCertificates(dir: string): void {
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr.toString()}`);
  };
  run([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=amebo-test-ca',
  ]);
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'r.key', '-out', 'r.csr', '-subj', '/CN=127.0.0.1']);
  writeFileSync(path.join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost');
  run([
    'x509',
    '-req',
    '-in',
    'r.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'r.crt',
    '-days',
    '2',
    '-extfile',
    'ext',
  ]);
}

async function startSecureRedis(): Promise<void> {
  const dir = (secure.dir = mkdtempSync(path.join(tmpdir(), 'amebo-redis-tls-')));
  makeCertificates(dir);
  const tls = ['tls-cert-file r.crt', 'tls-key-file r.key', 'tls-ca-cert-file ca.crt', 'tls-auth-clients no'];
  writeFileSync(
    path.join(dir, 'redis.conf'),
    [
      'port 0',
      `tls-port ${secure.redisPort}`,
      ...tls,
      'bind 127.0.0.1',
      `dir ${dir}`,
      'save ""',
      'appendonly no',
      'user default off',
      'user amebo on >amebo-redis-pw ~* &* +@all',
      '',
    ].join('\n'),
  );
  writeFileSync(
    path.join(dir, 'sentinel.conf'),
    [
      'port 0',
      `tls-port ${secure.sentinelPort}`,
      ...tls,
      'tls-replication yes',
      'bind 127.0.0.1',
      `dir ${dir}`,
      'requirepass sentinel-pw',
      `sentinel monitor ${secure.name} 127.0.0.1 ${secure.redisPort} 1`,
      `sentinel auth-user ${secure.name} amebo`,
      `sentinel auth-pass ${secure.name} amebo-redis-pw`,
      '',
    ].join('\n'),
  );
  spawned.push(spawn('redis-server', ['redis.conf'], { cwd: dir, stdio: 'ignore' }));
  spawned.push(spawn('redis-server', ['sentinel.conf', '--sentinel'], { cwd: dir, stdio: 'ignore' }));
  const probe = new Redis({
    port: secure.sentinelPort,
    password: 'sentinel-pw',
    tls: { ca: readFileSync(path.join(dir, 'ca.crt')) },
    lazyConnect: true,
    maxRetriesPerRequest: 0,
  });
  probe.on('error', () => undefined);
  try {
    await eventually(async () => {
      await probe.connect().catch(() => undefined);
      // Known to the Sentinel and reachable by it (it authenticated over TLS): not down.
      const m = (await probe.call('SENTINEL', 'master', secure.name)) as string[];
      const flags = m[m.indexOf('flags') + 1] ?? '';
      return m[m.indexOf('port') + 1] === String(secure.redisPort) && !/down|disconnected/.test(flags);
    }, 30_000);
  } finally {
    probe.disconnect();
  }
}

test(
  'Sentinel with TLS and passwords, Redis with TLS and an ACL user: Amebo connects through both',
  {
    skip: !hasRedis
      ? 'no redis-server here to run a Sentinel'
      : !hasOpenssl
        ? 'no openssl here to make the certificates'
        : false,
  },
  async () => {
    await startSecureRedis();
    const ca = path.join(secure.dir, 'ca.crt');
    const settings = {
      redisUrl: `rediss://amebo:amebo-redis-pw@127.0.0.1:${secure.redisPort}/0`,
      redisSentinels: `127.0.0.1:${secure.sentinelPort}`,
      redisSentinelName: secure.name,
      redisSentinelPassword: 'sentinel-pw',
      redisSentinelTls: true,
      redisTlsCaFile: ca,
    };
    const s = await start(secureEnv, {}, settings);
    try {
      const r = s.amebo.redis;
      assert.equal(await r.call('ACL', 'WHOAMI'), 'amebo', 'as the ACL user of the URL');
      assert.equal((r as unknown as { stream: TLSSocket }).stream.encrypted, true, 'over TLS');
      const ready = await http(s.url, secureEnv, 'GET', '/ready');
      assert.equal(ready.status, 200, JSON.stringify(ready.body));
      // Registry changes travel through Redis pub/sub on this connection.
      const created = await http(
        s.url,
        secureEnv,
        'POST',
        '/v1/applications',
        { application: 'tls-app', secret: 'tls-app-secret-0123456789' },
        'admin',
      );
      assert.equal(created.status, 201);
    } finally {
      await s.close();
    }
    // The Sentinel's password is its own: without it (or without TLS to it) Amebo cannot find Redis,
    // and says so instead of hanging.
    for (const wrong of [{ redisSentinelPassword: 'not-it' }, { redisSentinelTls: false }]) {
      await assert.rejects(
        start(secureEnv, {}, { ...settings, redisConnectTimeoutMs: 3000, ...wrong }),
        (err: Error) => {
          assert.equal(err.name, 'ServiceUnreachableError', err.message);
          assert.match(err.message, /Redis/);
          assert.doesNotMatch(err.message, /amebo-redis-pw|sentinel-pw/, 'no password in the message');
          if (wrong.redisSentinelPassword) assert.match(err.message, /WRONGPASS/, 'says why');
          return true;
        },
      );
    }
  },
);

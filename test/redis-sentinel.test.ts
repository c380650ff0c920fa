import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
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
  await destroy(env);
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

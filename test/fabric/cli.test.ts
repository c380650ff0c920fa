/** `amebo call | services | logs`: output, exit codes, and never hanging. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { ServiceError } from '../../src/fabric/index.js';
import { parseDuration } from '../../src/cli/contract.js';
import { AMQP_URL, open, sleep, uniqueDomain } from './helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'cli.ts');

function amebo(
  args: string[],
  hardMs = 20_000,
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', cli, ...args],
      { timeout: hardMs, env: { ...process.env, AMEBO_AMQP_URL: AMQP_URL } },
      (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr, ms: Date.now() - t0 });
      },
    );
  });
}

test('durations: units, bare numbers are seconds', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('2'), 2000);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.throws(() => parseDuration('soon'));
});

test('call: 0 with the result, 1 on a remote error or no such method, 2 on bad arguments, 3 on timeout', async (t) => {
  const domain = uniqueDomain();
  const svc = await open(t, { domain, type: 'calc', id: 'c1', keepAliveMs: 0, drainTimeoutMs: 500 });
  await svc.rpcRegister({
    multiply: ({ x, y }: { x: number; y: number }) => x * y,
    fail: () => {
      throw new ServiceError('ValueError', 'nope', { code: 7 });
    },
    slow: () => sleep(3000),
  });
  const [ok, remote, missing, late, badJson] = await Promise.all([
    amebo(['call', domain, 'calc', 'c1', 'multiply', '{"x": 6, "y": 7}', '--json']),
    amebo(['call', domain, 'calc', 'c1', 'fail', '--json']),
    amebo(['call', domain, 'calc', 'c1', 'divide', '{}', '--timeout', '10s']),
    amebo(['call', domain, 'calc', 'c1', 'slow', '--timeout', '300ms']),
    amebo(['call', domain, 'calc', 'c1', 'multiply', '[1, 2]']),
  ]);
  assert.deepEqual([ok.code, ok.stdout], [0, '42\n']);
  assert.equal(remote.code, 1);
  assert.equal(remote.stderr, '', '--json: the error goes to stdout');
  assert.deepEqual(JSON.parse(remote.stdout), {
    error: {
      code: 'REMOTE_ERROR',
      message: 'remote error ValueError: nope',
      details: { type: 'ValueError', args: ['nope', { code: 7 }] },
    },
  });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /not found/);
  assert.equal(late.code, 3);
  assert.match(late.stderr, /timeout/);
  assert.equal(badJson.code, 2);
  assert.match(badJson.stderr, /JSON object/);
});

test('services lists what is heard; logs stops by itself after --count or --timeout', async (t) => {
  const domain = uniqueDomain();
  const svc = await open(t, { domain, type: 'encoder', id: 'e1', version: '3.1.0', keepAliveMs: 300 });
  const log = pino({ level: 'info' }, svc.logDestination());
  const ticker = setInterval(() => log.warn('disk low'), 100);
  t.after(() => clearInterval(ticker));

  const [services, counted, timedOut] = await Promise.all([
    amebo(['services', '--domain', domain, '--wait', '1s', '--json']),
    amebo(['logs', '--domain', domain, '--service', 'e1', '--level', 'warning', '--count', '2', '--json']),
    amebo(['logs', '--domain', domain, '--level', 'error', '--timeout', '1s']),
  ]);
  assert.equal(services.code, 0, services.stderr);
  const list = JSON.parse(services.stdout) as Array<{ fqn: string; status: string; version: string }>;
  assert.deepEqual(
    list.map((s) => [s.fqn, s.status, s.version]),
    [[`${domain}.encoder.e1`, 'up', '3.1.0']],
  );
  assert.equal(counted.code, 0, counted.stderr);
  const lines = counted.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { level: string; service_id: string; message: string });
  assert.deepEqual(
    lines.map((l) => [l.level, l.service_id, l.message]),
    [
      ['WARNING', 'e1', 'disk low'],
      ['WARNING', 'e1', 'disk low'],
    ],
  );
  // only warnings were logged: an error-level tail prints nothing and ends at its timeout
  assert.equal(timedOut.code, 0, timedOut.stderr);
  assert.equal(timedOut.stdout, '');
});

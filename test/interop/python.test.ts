/**
 * Interop with amqp-fabric's side of the wire, played by small Python scripts built only on
 * Debian's python3-aiormq and written from the wire spec (no aio-pika, no amqp-fabric, no JsonRPC).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { RemoteError, ServiceError, ServiceNotFoundError } from '../../src/fabric/index.js';
import { AMQP_URL, open, sleep, timed, uniqueDomain, waitFor, within } from '../fabric/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SKIP = 'python3-aiormq not installed: apt-get install python3-aiormq';

/**
 * A python3 that can import aiormq: `AMEBO_TEST_PYTHON`, else the one on PATH, else Debian's (a
 * pyenv shim on PATH hides Debian's dist-packages).
 */
const python = ((): string | null => {
  const candidates = process.env.AMEBO_TEST_PYTHON ? [process.env.AMEBO_TEST_PYTHON] : ['python3', '/usr/bin/python3'];
  for (const exe of candidates) {
    try {
      execFileSync(exe, ['-c', 'import aiormq'], { stdio: 'ignore', timeout: 10_000 });
      return exe;
    } catch {
      // next
    }
  }
  return null;
})();

/** Runs a script to completion with a hard timeout and parses the JSON it prints. */
function runPython<T>(script: string, args: string[], hardMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const p = spawn(python!, [path.join(here, script), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: hardMs,
      killSignal: 'SIGKILL',
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code, signal) => {
      if (code !== 0) return reject(new Error(`${script} exited ${code ?? signal}: ${err}`));
      try {
        resolve(JSON.parse(out) as T);
      } catch {
        reject(new Error(`${script} printed no JSON: ${out} ${err}`));
      }
    });
  });
}

function skipWithoutPython(t: TestContext): boolean {
  if (python) return false;
  t.skip(SKIP);
  return true;
}

type Outcome = Record<string, any>;

test('a Python (amqp-fabric wire) caller calls a TypeScript service', async (t) => {
  if (skipWithoutPython(t)) return;
  const domain = uniqueDomain();
  const svc = await open(t, { domain, type: 'tsvc', id: 's1', keepAliveMs: 0, drainTimeoutMs: 2000 });
  await svc.rpcRegister({
    multiply: ({ x, y }: { x: number; y: number }) => {
      if (y === undefined) throw new ServiceError('TypeError', "multiply() missing 1 required keyword argument: 'y'");
      return x * y;
    },
    numbers: () => ({ nan: NaN, inf: Infinity, big: 12345678901234567890123n }),
    fail: () => {
      throw new ServiceError('ValueError', 'interop: fail() was called', { code: 'E42' });
    },
  });
  // one call at a time, so a second call waits in the queue and can expire there
  // (The sleep is the scenario: a call that keeps the service busy for `ms`.)
  await svc.rpcRegister({ slow: async ({ ms }: { ms: number }) => (await sleep(ms), ms) }, { concurrency: 1 });

  const r = await runPython<Outcome>('py_caller.py', [AMQP_URL, domain, 'tsvc', 's1'], 30_000);
  assert.deepEqual([r.multiply.outcome, r.multiply.value, r.multiply.content_type], ['result', 35, 'application/json']);
  assert.deepEqual([r.no_args.outcome, r.no_args.value], ['result', true]);
  assert.deepEqual(r.numbers.value, { nan: true, inf: true, big: true });
  assert.equal(r.fail.outcome, 'error');
  assert.deepEqual(r.fail.error, {
    type: 'ValueError',
    message: 'interop: fail() was called',
    args: ['interop: fail() was called', { code: 'E42' }],
  });
  assert.equal(r.fail.native_exception, true, 'pydoc.locate finds a built-in exception');
  assert.equal(r.missing_args.error.type, 'TypeError');
  // Returned by the broker (NO_ROUTE), not left to time out.
  assert.deepEqual([r.unknown.outcome, r.unknown.reply_code, r.unknown.reply_text], ['returned', 312, 'NO_ROUTE']);
  // Expired in the queue behind the busy call and dead-lettered back, not before its expiration.
  assert.deepEqual([r.expired.outcome, r.expired.reason], ['dead-lettered', 'expired']);
  assert.ok(r.expired.ms >= 250, `expired after ${r.expired.ms} ms`);
  assert.deepEqual([r.busy.outcome, r.busy.value], ['result', 1500]);
});

test('a TypeScript proxy calls a Python (amqp-fabric wire) service, and lists it from its keep-alives', async (t) => {
  if (skipWithoutPython(t)) return;
  const domain = uniqueDomain();
  const py = spawn(python!, [path.join(here, 'py_service.py'), AMQP_URL, domain, 'pysvc', 'p1'], {
    stdio: ['pipe', 'pipe', 'inherit'],
    timeout: 60_000,
    killSignal: 'SIGKILL',
  });
  t.after(() => {
    py.stdin.end();
    if (py.exitCode === null) setTimeout(() => py.kill('SIGKILL'), 2000).unref();
  });
  const lines = createInterface({ input: py.stdout })[Symbol.asyncIterator]();
  assert.equal((await within(lines.next(), 30_000, 'python service start')).value, 'ready');

  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0, keepAliveListen: true });
  const p = await client.rpcProxy<Record<string, (a?: object) => Promise<any>>>(domain, 'p1', 'pysvc', {
    timeoutMs: 5000,
  });
  assert.equal(await p.multiply!({ x: 5, y: 7 }), 35);
  assert.equal(await p.health_check(), true);
  const n = (await p.numbers!()) as { nan: number; inf: number; big: bigint };
  assert.ok(Number.isNaN(n.nan));
  assert.equal(n.inf, Infinity);
  assert.equal(n.big, 12345678901234567890123n);

  const err = (await p.fail!().catch((e: unknown) => e)) as RemoteError;
  assert.ok(err instanceof RemoteError);
  assert.equal(err.type, 'ValueError');
  assert.equal(err.message, "ValueError('interop: fail() was called')");
  assert.deepEqual(err.args, ['interop: fail() was called']);
  const missing = (await p.multiply!({ x: 1 }).catch((e: unknown) => e)) as RemoteError;
  assert.equal(missing.type, 'TypeError');
  const unknown = await timed(p.nope!());
  assert.ok(unknown.error instanceof ServiceNotFoundError, String(unknown.error)); // not a timeout

  // Python keep-alives: empty body, string headers; seen by listServices (no version: Python does not say)
  const listed = await waitFor(
    async () => (await client.listServices({ domain, type: 'pysvc' }))[0],
    5000,
    'python service listed',
  );
  assert.deepEqual([listed.fqn, listed.status, listed.version], [`${domain}.pysvc.p1`, 'up', null]);
});

test('a Python (amqp-fabric wire) keep-alive listener lists TypeScript services', async (t) => {
  if (skipWithoutPython(t)) return;
  const domain = uniqueDomain();
  await open(t, { domain, type: 'encoder', id: 'e1', version: '1.0.0', keepAliveMs: 500 });
  await open(t, { domain, type: 'decoder', id: 'd1', keepAliveMs: 500 });
  const r = await runPython<{ services: Array<{ domain: string; type: string; id: string }>; rejected: string[] }>(
    'py_listener.py',
    [AMQP_URL, domain, 'pylister', 'l1', '1.5'],
    20_000,
  );
  const mine = r.services
    .filter((s) => s.domain === domain)
    .map((s) => `${s.domain}.${s.type}.${s.id}`)
    .sort();
  assert.deepEqual(mine, [`${domain}.decoder.d1`, `${domain}.encoder.e1`]);
  assert.deepEqual(
    r.rejected.filter((x) => x.includes(domain)),
    [],
  );
});

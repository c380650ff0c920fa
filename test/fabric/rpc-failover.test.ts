/**
 * HA clique: two instances with the same FQN in separate processes; the one running a call is
 * killed with SIGKILL mid-call, and the call completes on the other (acks only follow confirmed replies).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { open, uniqueDomain, within } from './helpers.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'service.ts');

interface Instance {
  proc: ChildProcess;
  lines: AsyncIterator<string>;
}

function startInstance(args: string[]): Instance {
  const proc = spawn(process.execPath, ['--import', 'tsx', fixture, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  return { proc, lines };
}

async function nextLine(i: Instance, ms: number): Promise<string> {
  const r = await within(i.lines.next(), ms, 'child output');
  if (r.done) throw new Error('child exited');
  return r.value;
}

test('a call in flight on an instance killed with SIGKILL is served by another member of the clique', async (t) => {
  const domain = uniqueDomain();
  const a = startInstance([domain, 'worker', 'w1']);
  const b = startInstance([domain, 'worker', 'w1']);
  t.after(() => {
    for (const i of [a, b]) if (i.proc.exitCode === null && i.proc.signalCode === null) i.proc.kill('SIGKILL');
  });
  assert.equal(await nextLine(a, 20_000), 'ready');
  assert.equal(await nextLine(b, 20_000), 'ready');
  const pids = new Set([a.proc.pid, b.proc.pid]);

  const client = await open(t, { domain, type: 'client', id: 'k1', keepAliveMs: 0 });
  const p = await client.rpcProxy<{ slow(a: { ms: number }): { pid: number } }>(domain, 'w1', 'worker', {
    timeoutMs: 15_000,
  });
  const call = p.slow({ ms: 1500 });
  // Whichever instance got the call says so; kill it mid-call.
  const pa = nextLine(a, 10_000);
  const pb = nextLine(b, 10_000);
  pa.catch(() => undefined);
  pb.catch(() => undefined);
  const first = await Promise.race([pa.then((l) => ({ i: a, l })), pb.then((l) => ({ i: b, l }))]);
  assert.equal(first.l, 'start slow');
  const victim = first.i;
  const survivor = victim === a ? b : a;
  victim.proc.kill('SIGKILL');
  await once(victim.proc, 'exit');

  const result = await within(call, 30_000, 'the redelivered call');
  assert.equal(result.pid, survivor.proc.pid);
  assert.ok(pids.has(result.pid));
  // the survivor really ran it a second time (redelivered), it was not answered by the dead one
  assert.equal(await (survivor === a ? pa : pb), 'start slow');
});

/**
 * The operator CLI against a running Amebo: inspect, dead-letters, resurrect, replay and monitor,
 * as child processes of `bin/amebo.js`, with their exit codes and errors.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../helpers/cli.js';
import { destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { bridgeStarter } from '../../bridge/index.js';
import { deliveryPlugin } from '../../src/plugins.js';
import { flakyAndSteady, Receiver, seed } from './receiver.js';

const env = testEnv();
const rx = new Receiver();
let srv: Running;
let APP: [string, string];
const subs: Record<string, string> = {};
const call = (m: Parameters<typeof http>[2], p: string, body?: unknown, auth?: Parameters<typeof http>[5]) =>
  http(srv.url, env, m, p, body, auth);

function amebo(args: string[], extra: Record<string, string> = {}, timeoutMs = 30_000) {
  const p = runCli(args, { AMEBO_URL: srv.url, AMEBO_ADMIN_TOKEN: env.adminToken, NO_COLOR: '1', ...extra }, timeoutMs);
  return { done: p.done.then((code) => ({ code, out: p.out(), err: p.err() })), out: p.out, err: p.err };
}
const run = (args: string[], extra: Record<string, string> = {}) => amebo(args, extra).done;

let failing = true;
before(async () => {
  await rx.listen();
  rx.on('/flaky', () => ({ status: failing ? 500 : 200 }));
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })], plugins: [deliveryPlugin] });
  APP = await seed(call, 'ops', ['ops.done']);
  Object.assign(subs, await flakyAndSteady(call, rx, 'ops', 'ops.done'));
});
after(async () => {
  await srv?.close();
  await rx.close();
  await destroy(env);
});

const t0 = new Date(Date.now() - 1000).toISOString();
const events: string[] = [];

test('inspect, dead-letters and resurrect (partial, then more than there are: no hang)', async () => {
  for (let n = 0; n < 3; n++) {
    const r = await call('POST', '/v1/events', { action: 'ops.done', payload: { n } }, APP);
    assert.equal(r.status, 202);
    events.push(r.body.event);
  }
  await eventually(async () => {
    const d = await call('GET', `/v1/subscriptions/${subs.flaky}/dead-letters`, undefined, 'admin');
    return d.body.count === 3 && rx.at('/steady').length >= 3;
  }, 30_000);

  const dl = await run(['dead-letters', subs.flaky!, '--json']);
  assert.equal(dl.code, 0, dl.err);
  const listed = JSON.parse(dl.out);
  assert.equal(listed.count, 3);
  assert.deepEqual(listed.items.map((i: { event: string }) => i.event).sort(), [...events].sort());

  const human = await run(['inspect', 'event', events[0]!]);
  assert.equal(human.code, 0, human.err);
  assert.match(human.out, /ops\.done/);
  assert.match(human.out, /ops\/flaky dead after 1 attempt/);
  assert.match(human.out, /ops\/steady delivered after 1 attempt/);
  const withAttempts = JSON.parse((await run(['inspect', 'event', events[0]!, '--attempts', '--json'])).out);
  assert.equal(withAttempts.attempts[subs.flaky!][0].status, 500);

  const sub = await run(['inspect', 'subscription', subs.flaky!]);
  assert.equal(sub.code, 0, sub.err);
  assert.match(sub.out, /dead letters waiting: 3/);

  failing = false;
  const two = await run(['resurrect', subs.flaky!, '--count', '2']);
  assert.equal(two.code, 0, two.err);
  assert.match(two.out, /resurrected 2/);
  const rest = await run(['resurrect', subs.flaky!, '--count', '50']);
  assert.equal(rest.code, 0, rest.err);
  assert.match(rest.out, /resurrected 1/);
  await eventually(
    () => events.every((id) => rx.at('/flaky').some((r) => r.headers['webhook-id'] === id && r.json)),
    20_000,
  );
  await eventually(async () => {
    const d = await call('GET', `/v1/subscriptions/${subs.flaky}/dead-letters`, undefined, 'admin');
    return d.body.count === 0;
  }, 30_000);
});

test('replay re-delivers a time range to one subscription', async () => {
  const before = rx.at('/steady').length;
  const r = await run(['replay', subs.steady!, '--from', t0, '--json']);
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).count, 3);
  await eventually(() => rx.at('/steady').length >= before + 3, 30_000);
});

test('monitor tails events and deliveries matching its pattern, and stops at --count', async () => {
  const mon = amebo(['monitor', 'ops.*', '--json', '--count', '2'], {}, 120_000);
  // The monitor says on stderr when it is subscribed (a CLI start takes seconds on a loaded machine).
  await eventually(() => mon.err().includes('monitoring ops.*'), 90_000);
  // Then publish until it has seen its two messages.
  const seen = eventually(
    async () => {
      await call('POST', '/v1/events', { action: 'ops.done', payload: { monitored: true } }, APP);
      return mon.out().split('\n').filter(Boolean).length >= 2;
    },
    20_000,
    300,
  );
  const { code, out, err } = await mon.done;
  await seen.catch(() => undefined);
  assert.equal(code, 0, err);
  const lines = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; event?: { action: string } });
  assert.equal(lines.length, 2);
  assert.ok(
    lines.every((l) => ['event', 'delivery'].includes(l.type)),
    out,
  );
  assert.ok(
    lines.some((l) => l.type === 'event' && l.event?.action === 'ops.done'),
    out,
  );
});

test('errors: exit 1 with the code for an unknown event, 2 for bad usage, 3 when Amebo is unreachable', async () => {
  const unknown = await run(['inspect', 'event', '00000000-0000-7000-8000-000000000000']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.err, /AMEBO_ERR_EVENT_NOT_FOUND/);
  const badCount = await run(['resurrect', subs.flaky!, '--count', '0']);
  assert.equal(badCount.code, 2);
  assert.match(badCount.err, /positive integer/);
  const noToken = await run(['dead-letters', subs.flaky!], { AMEBO_ADMIN_TOKEN: '', AMEBO_STATE_DIR: '/nonexistent' });
  assert.equal(noToken.code, 2);
  assert.match(noToken.err, /admin token/);
  const down = await run(['inspect', 'subscription', subs.flaky!], { AMEBO_URL: 'http://127.0.0.1:9' });
  assert.equal(down.code, 3);
  assert.match(down.err, /cannot reach Amebo/);
  const monDown = await run(['monitor', '--count', '1'], { AMEBO_URL: 'http://127.0.0.1:9' });
  assert.equal(monDown.code, 3);
});

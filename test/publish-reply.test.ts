import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { drainQueue, eventually, http, type Running, type TestEnv, SHOP } from './helpers/harness.js';
import { shopBehindProxy, type TcpProxy } from './helpers/proxy.js';

// When a publish is answered: on the commit (what a 2xx promises), unless the client asks to wait
// for the broker confirm (Prefer: wait), or too many answered events still wait for theirs
// (AMEBO_MAX_UNCONFIRMED: then replies wait again). The broker's confirms are held back by a proxy.
const CONFIRM_WAIT_MS = 3000;
let proxy: TcpProxy;
let env: TestEnv;
let srv: Running;
let queue = '';
let close: () => Promise<void>;
const post = (payload: unknown, headers: Record<string, string> = {}) =>
  http(srv.url, env, 'POST', '/v1/events', { action: 'order.placed', payload }, SHOP, headers);

before(async () => {
  ({ proxy, env, srv, queue, close } = await shopBehindProxy({
    confirmWaitMs: CONFIRM_WAIT_MS,
    maxUnconfirmed: 3,
    relayGraceMs: 1000,
    relayIntervalMs: 150,
  }));
  // The process starts in backlog mode (its relay first publishes what a stopped one left): live
  // publishing once that is done.
  await eventually(() => !srv.amebo.pipeline.inBacklog, 30_000);
});
after(async () => {
  await close?.();
});

test('replies go on the commit; Prefer: wait holds one until the confirm; past AMEBO_MAX_UNCONFIRMED all wait', async () => {
  // Confirmed normally: Prefer: wait says so.
  const confirmed = await post({ i: 'confirmed' }, { prefer: 'wait=10' });
  assert.equal(confirmed.status, 202);
  assert.equal(confirmed.body.published, true);
  assert.equal(confirmed.headers['preference-applied'], 'wait=10');

  proxy.hold(); // from here the broker's confirms never arrive
  const early: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await post({ i });
    assert.equal(r.status, 202);
    assert.equal(r.body.published, false, 'answered before any confirm');
    // A reply that had waited out its confirm wait would have sent the process to the outbox.
    assert.equal(srv.amebo.pipeline.inBacklog, false, 'answered on the commit, before the confirm wait ran out');
    const row = await srv.amebo.pool.query('SELECT 1 FROM outbox WHERE id = $1', [r.body.event]);
    assert.equal(row.rowCount, 1, 'committed, and in the outbox until confirmed');
    early.push(r.body.event);
  }

  // Three answered events wait for their confirms (the limit): the next reply waits for its own.
  const held = await post({ i: 'held' });
  assert.equal(held.status, 202);
  assert.equal(held.body.published, false, 'no confirm came within the wait');
  // Answered only once a confirm wait had run out (which is what sends the process to the outbox).
  assert.equal(srv.amebo.pipeline.inBacklog, true, 'back-pressure: answered after the confirm wait');

  // The connection drops and comes back: every answered event reaches the queue (the relay).
  proxy.cut();
  const ids = [confirmed.body.event as string, ...early, held.body.event as string];
  await eventually(async () => {
    const n = await srv.amebo.pool.query('SELECT count(*)::int AS n FROM outbox WHERE id = ANY($1::uuid[])', [ids]);
    return n.rows[0].n === 0;
  }, 30_000);
  const got = new Set<string>();
  const until = Date.now() + 30_000;
  while (ids.some((id) => !got.has(id)) && Date.now() < until)
    for (const m of await drainQueue(queue, 10, 1000)) got.add(JSON.parse(m.content.toString()).id as string);
  for (const id of ids) assert.ok(got.has(id), `event ${id} reached the queue`);
});

test('Prefer: wait=0, other preferences and malformed values leave the reply on the commit', async () => {
  await eventually(() => !srv.amebo.pipeline.inBacklog && srv.amebo.broker.connected, 30_000);
  for (const prefer of ['wait=0', 'respond-async', 'wait', 'wait=abc', 'wait=-1', 'return=minimal']) {
    const r = await post({ prefer }, { prefer });
    assert.equal(r.status, 202, prefer);
    assert.equal(r.body.published, false, `${prefer}: answered on the commit`);
    assert.equal(r.headers['preference-applied'], undefined, prefer);
  }
  // Among others, and quoted: honoured.
  const r = await post({ prefer: 'list' }, { prefer: 'respond-async, wait="5"; x=1, handling=lenient' });
  assert.equal(r.body.published, true);
  assert.equal(r.headers['preference-applied'], 'wait=5');
});

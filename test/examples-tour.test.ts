/**
 * The README's quick tour, as a reader runs it: the receiver sets itself up with the admin token,
 * `amebo publish` sends an event, the receiver prints the verified delivery, and Ctrl-C removes
 * what the receiver created.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { destroy, eventually, http, start, testEnv, type Running } from './helpers/harness.js';
import { bridgeStarter } from '../bridge/index.js';
import { runCli, runNode } from './helpers/cli.js';

const env = testEnv();
let srv: Running;

const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });

before(async () => {
  srv = await start(env, { parts: [bridgeStarter({ breaker: false })] });
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

test('quick tour: the receiver subscribes itself, prints the verified delivery, cleans up on Ctrl-C', async () => {
  const port = await freePort();
  const common = { AMEBO_URL: srv.url, AMEBO_ADMIN_TOKEN: env.adminToken, NO_COLOR: '1' };
  const rcv = runNode(
    ['--import', 'tsx', new URL('../examples/webhook-receiver.ts', import.meta.url).pathname],
    { ...common, PORT: String(port) },
    120_000,
  );
  try {
    await eventually(() => rcv.out().includes('subscribed tour/receiver-'), 60_000);
    assert.match(rcv.out(), /publish one with:\n {2}node bin\/amebo\.js publish tour\.hello/);
    const pub = runCli(['publish', 'tour.hello', '{"hello": "world"}', '--json'], common);
    assert.equal(await pub.done, 0, pub.err());
    const { event } = JSON.parse(pub.out()) as { event: string };
    await eventually(() => rcv.out().includes(event), 60_000);
    assert.match(rcv.out(), new RegExp(`tour\\.hello ${event} \\(attempt 1\\): \\{"hello":"world"\\}`));
  } finally {
    rcv.child.kill('SIGINT');
  }
  assert.equal(await rcv.done, 0, rcv.err());
  const app = await http(srv.url, env, 'GET', '/v1/applications/tour', undefined, 'admin');
  assert.equal(app.status, 404, 'the application it created is gone (with its action and subscription)');
  const subs = await http(srv.url, env, 'GET', '/v1/subscriptions?application=tour', undefined, 'admin');
  assert.deepEqual(subs.body.items ?? [], []);
});

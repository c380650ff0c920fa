import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { destroy, eventually, http, start, testEnv, type Running } from '../helpers/harness.js';
import { extraParts, extraPlugins } from '../../src/plugins.js';

// Issue "Production on a RabbitMQ cluster" §1: every AMQP user of Amebo is observable in /metrics,
// not only the core's connection. `serve` also holds the fabric gateway's connection (its control
// and RPC reply channels) and the presence role's (its listing channel): they show there too.
const env = testEnv({ roles: 'api,relay,presence' });
let srv: Running;

before(async () => {
  srv = await start(env, { plugins: await extraPlugins(env.cfg), parts: await extraParts(env.cfg) });
});
after(async () => {
  await srv?.close();
  await destroy(env);
});

const metrics = async (): Promise<string> => String((await http(srv.url, env, 'GET', '/metrics')).body);
const value = (text: string, name: string, labels: string): string | undefined =>
  new RegExp(`^${name}\\{${labels.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(text)?.[1];

test('the fabric gateway and presence connections and their channels show in /metrics', async () => {
  // The gateway's reply channel is set up on its first call (any answer will do).
  await http(srv.url, env, 'POST', '/v1/rpc/nobody/none/n1/ping', {}, 'admin');
  const text = await eventually(async () => {
    const t = await metrics();
    return value(t, 'amebo_amqp_channels_ready', 'channel="fabric rpc replies"') === '1' ? t : '';
  }, 30_000);
  assert.match(text, /^amebo_amqp_connected\{connection="amebo \d+"\} 1$/m, 'the core connected');
  for (const connection of ['fabric gateway', 'presence'])
    assert.equal(value(text, 'amebo_amqp_connected', `connection="${connection}"`), '1', `${connection} connected`);
  for (const channel of ['publisher', 'fabric control', 'fabric rpc replies', 'presence'])
    assert.equal(value(text, 'amebo_amqp_channels_ready', `channel="${channel}"`), '1', `${channel} ready`);
  // Only channels in use are shown: the gateway never publishes data, so no data publisher is listed as down.
  assert.equal(value(text, 'amebo_amqp_channels_ready', 'channel="fabric data publisher"'), undefined);
});

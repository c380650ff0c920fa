/**
 * Seed 002's e-commerce platform against a running Amebo (`npm start`):
 *   npx tsx examples/ecommerce.ts [--keep] [http://127.0.0.1:8701]
 * Registers user-, order-, email- and analytics-service, their actions and subscriptions, then
 * publishes a user.created and an order.placed event, and removes the four applications again
 * (with their actions, subscriptions and queues) unless --keep is given. The subscriptions are
 * consumed natively over AMQP (their queues hold the events: `amebo inspect subscription
 * email-service/welcome-emails`); with RECEIVER_URL set they are webhooks to that receiver instead
 * (e.g. examples/webhook-receiver.ts). Amebo is at the argument, else AMEBO_URL, else
 * http://127.0.0.1:8701; the admin token comes from AMEBO_ADMIN_TOKEN or .amebo/admin-token.
 */
import { readFileSync } from 'node:fs';
import { request } from 'undici';

const args = process.argv.slice(2);
const keep = args.includes('--keep');
const base = (args.find((a) => !a.startsWith('--')) ?? process.env.AMEBO_URL ?? 'http://127.0.0.1:8701').replace(
  /\/+$/,
  '',
);
const receiver = process.env.RECEIVER_URL?.replace(/\/+$/, '');
const token = process.env.AMEBO_ADMIN_TOKEN ?? readFileSync('.amebo/admin-token', 'utf8').trim();

async function call(method: 'POST' | 'GET' | 'DELETE', path: string, body: unknown, auth: string): Promise<any> {
  const res = await request(base + path, {
    method,
    headers: { authorization: auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const text = await res.body.text();
  const json = text ? JSON.parse(text) : null;
  console.log(method, path, res.statusCode, res.statusCode >= 300 ? text : '');
  return json;
}

/** A subscription's delivery: the receiver's webhook when RECEIVER_URL is set, else a native AMQP queue. */
const deliver = (path: string) => (receiver ? { handler: `${receiver}${path}` } : { transport: 'amqp' });
const admin = `Bearer ${token}`;
const basic = (app: string) => `Basic ${Buffer.from(`${app}:${app}-secret`).toString('base64')}`;

const APPS = {
  'user-service': 'https://users.myapp.com',
  'order-service': 'https://orders.myapp.com',
  'email-service': 'https://email.myapp.com',
  'analytics-service': 'https://analytics.myapp.com',
};
for (const [app, address] of Object.entries(APPS))
  await call('POST', '/v1/applications', { application: app, address, secret: `${app}-secret` }, admin);

await call(
  'POST',
  '/v1/actions',
  {
    action: 'user.created',
    application: 'user-service',
    schemata: {
      type: 'object',
      properties: {
        user_id: { type: 'string' },
        email: { type: 'string', format: 'email' },
        name: { type: 'string' },
        plan: { type: 'string', enum: ['free', 'premium'] },
      },
      required: ['user_id', 'email', 'name'],
    },
  },
  basic('user-service'),
);
await call(
  'POST',
  '/v1/actions',
  {
    action: 'order.placed',
    application: 'order-service',
    schemata: {
      type: 'object',
      properties: {
        order_id: { type: 'string' },
        user_id: { type: 'string' },
        items: { type: 'array' },
        total: { type: 'number' },
        currency: { type: 'string' },
      },
      required: ['order_id', 'user_id', 'items', 'total'],
    },
  },
  basic('order-service'),
);

await call(
  'POST',
  '/v1/subscriptions',
  {
    application: 'email-service',
    subscription: 'welcome-emails',
    action: 'user.created',
    ...deliver('/webhooks/user-created'),
  },
  basic('email-service'),
);
await call(
  'POST',
  '/v1/subscriptions',
  {
    application: 'analytics-service',
    subscription: 'user-analytics',
    action: 'user.created',
    ...deliver('/webhooks/events'),
  },
  basic('analytics-service'),
);
await call(
  'POST',
  '/v1/subscriptions',
  {
    application: 'analytics-service',
    subscription: 'order-analytics',
    action: 'order.placed',
    ...deliver('/webhooks/events'),
  },
  basic('analytics-service'),
);

await call(
  'POST',
  '/v1/events',
  {
    action: 'user.created',
    payload: { user_id: 'u1', email: 'ada@example.com', name: 'Ada', plan: 'premium' },
    deduper: 'signup-u1',
  },
  basic('user-service'),
);
await call(
  'POST',
  '/v1/events',
  { action: 'order.placed', payload: { order_id: 'o1', user_id: 'u1', items: ['book'], total: 55, currency: 'USD' } },
  basic('order-service'),
);

// Leave nothing behind: deleting an application removes its actions, subscriptions and queues (the
// events stay in the event log).
if (!keep) for (const app of Object.keys(APPS)) await call('DELETE', `/v1/applications/${app}`, undefined, admin);

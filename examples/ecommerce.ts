/**
 * Seed 002's e-commerce platform against a running Amebo (`npm start`):
 *   npx tsx examples/ecommerce.ts [http://127.0.0.1:8701]
 * Registers user-, order-, email- and analytics-service, their actions and subscriptions, then
 * publishes a user.created and an order.placed event. The admin token comes from
 * AMEBO_ADMIN_TOKEN or .amebo/admin-token.
 */
import { readFileSync } from 'node:fs';
import { request } from 'undici';

const base = process.argv[2] ?? 'http://127.0.0.1:8701';
const token = process.env.AMEBO_ADMIN_TOKEN ?? readFileSync('.amebo/admin-token', 'utf8').trim();

async function call(method: 'POST' | 'GET', path: string, body: unknown, auth: string): Promise<any> {
  const res = await request(base + path, {
    method,
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const json = await res.body.json();
  console.log(method, path, res.statusCode, res.statusCode >= 300 ? JSON.stringify(json) : '');
  return json;
}
const admin = `Bearer ${token}`;
const basic = (app: string) => `Basic ${Buffer.from(`${app}:${app}-secret`).toString('base64')}`;

for (const app of ['user-service', 'order-service', 'email-service', 'analytics-service'])
  await call(
    'POST',
    '/v1/applications',
    { application: app, address: `https://${app.split('-')[0]}s.myapp.com`, secret: `${app}-secret` },
    admin,
  );

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

// Handlers are relative to each application's address; point them at a receiver you run.
await call(
  'POST',
  '/v1/subscriptions',
  {
    application: 'email-service',
    subscription: 'welcome-emails',
    action: 'user.created',
    handler: '/webhooks/user-created',
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
    handler: '/webhooks/events',
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
    handler: '/webhooks/events',
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

/** The publish benchmark's event: ~1 KiB of order data and the action schema it is valid against. */
import { randomBytes } from 'node:crypto';

export const ORDER_SCHEMA = {
  type: 'object',
  properties: {
    order_id: { type: 'string' },
    user_id: { type: 'string' },
    currency: { type: 'string', enum: ['USD', 'EUR'] },
    total: { type: 'number', minimum: 0 },
    items: {
      type: 'array',
      items: {
        type: 'object',
        properties: { sku: { type: 'string' }, qty: { type: 'integer', minimum: 1 }, price: { type: 'number' } },
        required: ['sku', 'qty'],
      },
    },
    note: { type: 'string' },
  },
  required: ['order_id', 'user_id', 'items', 'total'],
} as const;

export function orderPayload(): Record<string, unknown> {
  const items = Array.from({ length: 8 }, (_, i) => ({
    sku: `SKU-${i}-${randomBytes(6).toString('hex')}`,
    qty: i + 1,
    price: 9.99 + i,
  }));
  return {
    order_id: randomBytes(8).toString('hex'),
    user_id: 'u-12345',
    currency: 'USD',
    total: 123.45,
    items,
    note: 'x'.repeat(450),
  };
}

export const APP = { application: 'orders', secret: 'orders-secret-0123456789' };
export const APP_AUTH = `Basic ${Buffer.from(`${APP.application}:${APP.secret}`).toString('base64')}`;

/** Registers the application, the action (with ORDER_SCHEMA) and one amqp-transport subscription. */
export async function setupOrders(
  call: (method: 'POST', p: string, body: unknown, auth?: string) => Promise<unknown>,
): Promise<void> {
  await call('POST', '/v1/applications', APP);
  await call('POST', '/v1/actions', { action: 'order.placed', application: 'orders', schemata: ORDER_SCHEMA });
  await call('POST', '/v1/subscriptions', {
    application: 'orders',
    subscription: 'sink',
    action: 'order.placed',
    transport: 'amqp',
  });
}

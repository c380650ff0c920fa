import type { FastifyInstance } from 'fastify';
import { metricsText, registry as metricsRegistry } from '../metrics.js';
import { ping } from '../store/health.js';
import { replies, typed } from './schemas.js';
import type { ApiContext } from './server.js';

const within = <T>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms).unref()),
  ]);

const checks = {
  type: 'object',
  properties: { postgresql: { type: 'string' }, redis: { type: 'string' }, rabbitmq: { type: 'string' } },
  required: ['postgresql', 'redis', 'rabbitmq'],
  description: '"ok", or why not',
} as const;

export async function opsRoutes(scope: FastifyInstance, ctx: ApiContext): Promise<void> {
  const app = typed(scope);
  app.get(
    '/health',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['operations'],
        summary: 'The process is up',
        response: replies({
          200: {
            type: 'object',
            properties: { status: { const: 'ok' }, pid: { type: 'integer' } },
            required: ['status', 'pid'],
          },
        }),
      },
    },
    async () => ({ status: 'ok' as const, pid: process.pid }),
  );

  app.get(
    '/ready',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['operations'],
        summary: 'PostgreSQL, RabbitMQ and Redis are reachable',
        response: replies({
          200: {
            type: 'object',
            properties: { status: { const: 'ready' }, checks },
            required: ['status', 'checks'],
          },
          503: {
            type: 'object',
            description: 'something Amebo needs is unreachable (AMEBO_ERR_UNAVAILABLE)',
            properties: { status: { const: 'unavailable' }, checks, error: { $ref: 'Error#/properties/error' } },
            required: ['status', 'checks'],
          },
        }),
      },
    },
    async (_req, reply) => {
      const result = { postgresql: '', redis: '', rabbitmq: '' };
      await Promise.all([
        within(ping(ctx.pool), 2000).then(
          () => (result.postgresql = 'ok'),
          (err: Error) => (result.postgresql = err.message),
        ),
        within(ctx.redis.ping(), 2000).then(
          () => (result.redis = 'ok'),
          (err: Error) => (result.redis = err.message),
        ),
      ]);
      result.rabbitmq = ctx.broker.connected ? 'ok' : 'not connected';
      const down = Object.entries(result).filter(([, v]) => v !== 'ok');
      if (down.length)
        return reply.status(503).send({
          status: 'unavailable',
          checks: result,
          error: { code: 'AMEBO_ERR_UNAVAILABLE', message: `unreachable: ${down.map(([k]) => k).join(', ')}` },
        });
      return { status: 'ready' as const, checks: result };
    },
  );

  app.get(
    '/metrics',
    {
      config: { auth: 'metrics' },
      schema: {
        tags: ['operations'],
        summary: 'Prometheus metrics (Bearer AMEBO_METRICS_TOKEN when it is set)',
        response: replies({ 200: { type: 'string', description: 'Prometheus text exposition format' } }),
      },
    },
    async (_req, reply) => reply.type(metricsRegistry.contentType).send(await metricsText()),
  );
}

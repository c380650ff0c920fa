import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { AmeboError } from '../errors.js';
import { sha256 } from '../secrets.js';
import { metricsText, registry as metricsRegistry } from '../metrics.js';
import type { ApiContext } from './server.js';

const within = <T>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms).unref()),
  ]);

export async function opsRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  app.get('/health', { schema: { tags: ['operations'], summary: 'The process is up' } }, async () => ({
    status: 'ok',
    pid: process.pid,
  }));

  app.get(
    '/ready',
    { schema: { tags: ['operations'], summary: 'PostgreSQL, RabbitMQ and Redis are reachable' } },
    async (_req, reply) => {
      const checks: Record<string, string> = {};
      await Promise.all([
        within(ctx.pool.query('SELECT 1'), 2000).then(
          () => (checks.postgresql = 'ok'),
          (err: Error) => (checks.postgresql = err.message),
        ),
        within(ctx.redis.ping(), 2000).then(
          () => (checks.redis = 'ok'),
          (err: Error) => (checks.redis = err.message),
        ),
      ]);
      checks.rabbitmq = ctx.broker.connected ? 'ok' : 'not connected';
      const down = Object.entries(checks).filter(([, v]) => v !== 'ok');
      if (down.length)
        return reply.status(503).send({
          status: 'unavailable',
          checks,
          error: { code: 'AMEBO_ERR_UNAVAILABLE', message: `unreachable: ${down.map(([k]) => k).join(', ')}` },
        });
      return { status: 'ready', checks };
    },
  );

  const metricsHash = ctx.cfg.metricsToken ? sha256(ctx.cfg.metricsToken) : null;
  app.get(
    '/metrics',
    { schema: { tags: ['operations'], summary: 'Prometheus metrics (Bearer AMEBO_METRICS_TOKEN when it is set)' } },
    async (req, reply) => {
      if (metricsHash) {
        const [scheme, token = ''] = (req.headers.authorization ?? '').split(' ', 2);
        const given = Buffer.from(sha256(token.trim()), 'hex');
        if (!/^bearer$/i.test(scheme ?? '') || !timingSafeEqual(given, Buffer.from(metricsHash, 'hex')))
          throw new AmeboError('UNAUTHENTICATED', 'send Authorization: Bearer <AMEBO_METRICS_TOKEN>');
      }
      return reply.type(metricsRegistry.contentType).send(await metricsText());
    },
  );
}

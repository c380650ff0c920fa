import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { ApiContext } from './api/server.js';
import type { PartStarter } from './app.js';
import { announceStream } from './api/stream.js';
import { AmeboError } from './errors.js';

/**
 * API plugins of the parts that live outside the core (bridge deliveries, fabric gateway and
 * services listing), mounted by `serve` when the api role runs here.
 */
export async function extraPlugins(cfg: Config): Promise<NonNullable<ApiContext['plugins']>> {
  const out: NonNullable<ApiContext['plugins']> = [];
  if (!cfg.roleSet.has('api')) return out;
  out.push(deliveryPlugin);
  out.push(fabricRoutes);
  return out;
}

/** Deliveries and recovery routes; the test send is the bridge's HTTP sender, composed here. */
export const deliveryPlugin: NonNullable<ApiContext['plugins']>[number] = async (app, ctx) => {
  const { deliveryRoutes } = await import('./api/delivery-routes.js');
  const { TestSender } = await import('../bridge/test-send.js');
  const { registry } = ctx;
  const tester = new TestSender({
    signingSecrets: (row) => registry.signingSecrets(row),
    unseal: (sealed) => registry.box.open(sealed),
    targets: registry.targets,
    connectTimeoutMs: ctx.cfg.connectTimeoutMs,
  });
  app.addHook('onClose', async () => tester.close());
  await deliveryRoutes(app, ctx, { testSend: (row) => tester.send(row) });
};

/** `GET /v1/services` (read from the presence role's Redis fleet) and the HTTP RPC gateway. */
const fabricRoutes: NonNullable<ApiContext['plugins']>[number] = async (app, ctx) => {
  const { servicesRoutes } = await import('./fabric/presence.js');
  const { rpcGatewayRoutes } = await import('./fabric/gateway.js');
  const { FabricConnector } = await import('./fabric/connector.js');
  const { metricsObserver } = await import('./broker/connection.js');
  const presence = await newPresence(ctx.cfg, ctx.redis, ctx.log);
  // The gateway's own identity on the bus: it calls, it does not serve or announce itself.
  const fabric = new FabricConnector({
    amqpUrl: ctx.cfg.amqpUrl,
    domain: 'amebo',
    type: 'gateway',
    id: `${hostname()
      .replace(/[^A-Za-z0-9_-]/g, '-')
      .slice(0, 40)}-${process.pid}`,
    keepAliveMs: 0,
    discoveryExchange: ctx.cfg.discoveryExchange,
    // Its connection and channels show in /metrics like the core's.
    observer: metricsObserver('fabric gateway'),
  });
  await fabric.open({ timeoutMs: 10_000 });
  app.addHook('onClose', async () => fabric.close());
  // Authentication is the API's hook (every /v1 route needs a principal); the gateway also needs a
  // grant for the method (admin needs none).
  await servicesRoutes(app, { presence });
  await rpcGatewayRoutes(app, {
    fabric,
    authorize: async (req, domain, type, method) => {
      const who = req.principal;
      if (who.kind === 'admin') return;
      if (!(await ctx.registry.rpcAllowed(who.name, domain, type, method)))
        throw new AmeboError(
          'FORBIDDEN',
          `application "${who.name}" has no grant for ${domain}.${type}.${method} (the admin grants RPC methods: PATCH /v1/applications/${who.name} { rpc_grants })`,
        );
    },
  });
};

/** Parts beyond the core that this process runs, by role. */
export async function extraParts(cfg: Config): Promise<PartStarter[]> {
  const out: PartStarter[] = [];
  if (cfg.roleSet.has('bridge')) out.push((await import('../bridge/index.js')).startBridge);
  if (cfg.roleSet.has('presence')) out.push(startPresence);
  return out;
}

/** The fleet listing over this deployment's Redis (read by the API; kept by the presence role). */
async function newPresence(cfg: Config, redis: Redis, logger: Logger) {
  const { Presence } = await import('./fabric/presence.js');
  const { metricsObserver } = await import('./broker/connection.js');
  return new Presence({
    amqpUrl: cfg.amqpUrl,
    redis,
    redisPrefix: cfg.redis.presence,
    discoveryExchange: cfg.discoveryExchange,
    ttlSeconds: cfg.serviceTtlSeconds,
    logger,
    // The presence role's listening connection shows in /metrics (the API's reader never connects).
    observer: metricsObserver('presence'),
  });
}

/** The presence role: keep-alives into Redis; service up/down onto the live stream. */
const startPresence: PartStarter = async (amebo) => {
  const presence = await newPresence(amebo.cfg, amebo.redis, amebo.ctx.log.child({ role: 'presence' }));
  presence.on('change', (change) => void announceStream(amebo.redis, amebo.cfg.redis, { ...change }));
  await presence.start(10_000);
  return { close: () => presence.stop() };
};

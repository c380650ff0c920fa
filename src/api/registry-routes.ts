import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import type { ApplicationRow, ActionRow } from '../store/registry.js';
import * as sql from '../store/registry.js';
import type { ApiContext } from './server.js';

const appView = (r: ApplicationRow) => ({
  application: r.name,
  address: r.address,
  created_at: r.created_at,
  updated_at: r.updated_at,
});

export const actionView = (r: ActionRow) => ({
  action: r.name,
  application: r.application,
  description: r.description,
  version: r.version,
  schemata: r.schemata,
  created_at: r.created_at,
  updated_at: r.updated_at,
});

const nameParam = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 255 } },
  required: ['name'],
} as const;

/** Seed 000's dialect: `microservice`/`passphrase`/`location` for `application`/`secret`/`address`. */
function applicationInput(body: Record<string, unknown>) {
  return {
    application: (body.application ?? body.microservice) as string,
    address: (body.address ?? body.location ?? null) as string | null,
    secret: (body.secret ?? body.passphrase) as string | undefined,
  };
}

export async function registryRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { registry, auth, pool } = ctx;

  const createApp = {
    schema: {
      tags: ['applications'],
      summary: 'Register an application (admin); the secret is shown only here',
      body: {
        type: 'object',
        properties: {
          application: { type: 'string', maxLength: 63 },
          microservice: { type: 'string', maxLength: 63 },
          address: { type: ['string', 'null'], maxLength: 2048 },
          location: { type: ['string', 'null'], maxLength: 2048 },
          secret: { type: 'string', minLength: 16, maxLength: 512 },
          passphrase: { type: 'string', minLength: 16, maxLength: 512 },
        },
        anyOf: [{ required: ['application'] }, { required: ['microservice'] }],
      },
    },
  };
  const create = async (req: FastifyRequest, reply: import('fastify').FastifyReply) => {
    await auth.admin(req);
    const { row, secret } = await registry.createApplication(applicationInput(req.body as Record<string, unknown>));
    return reply.status(201).send({ ...appView(row), secret });
  };
  app.post('/v1/applications', createApp, create);
  app.post(
    '/v1/producers',
    { ...createApp, schema: { ...createApp.schema, summary: 'Seed 000 alias of POST /v1/applications' } },
    create,
  );

  const list = async (req: FastifyRequest) => {
    await auth.admin(req);
    const q = (req.query as { q?: string }).q;
    return { items: (await sql.listApplications(pool, q)).map(appView) };
  };
  const listSchema = {
    schema: {
      tags: ['applications'],
      querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 255 } } },
    },
  };
  app.get('/v1/applications', listSchema, list);
  app.get('/v1/producers', listSchema, list);

  app.get('/v1/applications/:name', { schema: { tags: ['applications'], params: nameParam } }, async (req) => {
    const { name } = req.params as { name: string };
    await auth.adminOr(req, name);
    return appView(await registry.requireApplication(name));
  });

  app.patch(
    '/v1/applications/:name',
    {
      schema: {
        tags: ['applications'],
        params: nameParam,
        body: {
          type: 'object',
          properties: { address: { type: ['string', 'null'], maxLength: 2048 } },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const { name } = req.params as { name: string };
      await auth.adminOr(req, name);
      return appView(await registry.updateApplication(name, (req.body as { address?: string | null }).address ?? null));
    },
  );

  app.delete(
    '/v1/applications/:name',
    { schema: { tags: ['applications'], params: nameParam } },
    async (req, reply) => {
      const { name } = req.params as { name: string };
      await auth.admin(req);
      if (!(await registry.deleteApplication(name)))
        throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${name}"`);
      for (const s of registry.lastDeletedSubscriptions) await removeQueues(ctx, s.application, s.name);
      return reply.status(204).send();
    },
  );

  app.post(
    '/v1/applications/:name/secret',
    {
      schema: {
        tags: ['applications'],
        summary: 'Rotate the application secret; the new one is shown only here',
        params: nameParam,
        body: { type: ['object', 'null'], properties: { secret: { type: 'string', minLength: 16, maxLength: 512 } } },
      },
    },
    async (req) => {
      const { name } = req.params as { name: string };
      await auth.adminOr(req, name);
      return {
        application: name,
        secret: await registry.rotateApplicationSecret(name, (req.body as { secret?: string } | null)?.secret),
      };
    },
  );

  // ---------------------------------------------------------------- actions
  app.post(
    '/v1/actions',
    {
      schema: {
        tags: ['actions'],
        summary: 'Register an action (event type) with its JSON Schema',
        body: {
          type: 'object',
          properties: {
            action: { type: 'string', maxLength: 255 },
            application: { type: 'string', maxLength: 63 },
            microservice: { type: 'string', maxLength: 63 },
            schemata: { type: ['object', 'string', 'boolean'] },
            description: { type: ['string', 'null'], maxLength: 4096 },
            secret: { type: 'string' },
          },
          required: ['action'],
          anyOf: [{ required: ['application'] }, { required: ['microservice'] }],
        },
      },
    },
    async (req, reply) => {
      const b = req.body as Record<string, unknown>;
      const application = (b.application ?? b.microservice) as string;
      await auth.adminOr(req, application, { bodySecret: true });
      const row = await registry.createAction({
        action: b.action as string,
        application,
        schemata: b.schemata ?? {},
        description: (b.description as string | null | undefined) ?? null,
      });
      return reply.status(201).send(actionView(row));
    },
  );

  app.get(
    '/v1/actions',
    {
      schema: {
        tags: ['actions'],
        querystring: {
          type: 'object',
          properties: { application: { type: 'string', maxLength: 63 }, q: { type: 'string', maxLength: 255 } },
        },
      },
    },
    async (req) => {
      await auth.principal(req);
      const q = req.query as { application?: string; q?: string };
      return { items: (await sql.listActions(pool, q)).map(actionView) };
    },
  );

  app.get('/v1/actions/:name', { schema: { tags: ['actions'], params: nameParam } }, async (req) => {
    await auth.principal(req);
    return actionView((await registry.requireAction((req.params as { name: string }).name)).row);
  });

  app.get('/v1/actions/:name/versions', { schema: { tags: ['actions'], params: nameParam } }, async (req) => {
    await auth.principal(req);
    const { name } = req.params as { name: string };
    await registry.requireAction(name);
    return { items: await sql.listActionVersions(pool, name) };
  });

  app.put(
    '/v1/actions/:name/schema',
    {
      schema: {
        tags: ['actions'],
        summary: 'Add a schema version (checked for compatibility, default BACKWARD)',
        params: nameParam,
        querystring: {
          type: 'object',
          properties: { compatibility: { enum: ['BACKWARD', 'FORWARD', 'FULL', 'NONE'] } },
        },
        body: {
          type: 'object',
          properties: { schemata: { type: ['object', 'string', 'boolean'] }, secret: { type: 'string' } },
          required: ['schemata'],
        },
      },
    },
    async (req) => {
      const { name } = req.params as { name: string };
      const action = await registry.requireAction(name);
      await auth.adminOr(req, action.row.application, {
        bodySecret: true,
        fallbackApplication: async () => action.row.application,
      });
      const mode = (req.query as { compatibility?: 'BACKWARD' | 'FORWARD' | 'FULL' | 'NONE' }).compatibility;
      return actionView(await registry.updateSchema(name, (req.body as { schemata: unknown }).schemata, mode));
    },
  );
}

export async function removeQueues(ctx: ApiContext, application: string, name: string): Promise<void> {
  if (!ctx.broker.connected) return;
  await ctx.broker
    .withThrowawayChannel((ch) => ctx.topology.deleteSubscription(ch, application, name))
    .catch((err: unknown) => ctx.log.warn({ err: (err as Error).message }, 'could not delete subscription queues'));
}

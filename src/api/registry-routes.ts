import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import type { ApplicationRow, ActionRow } from '../store/registry.js';
import * as sql from '../store/registry.js';
import type { ApiContext } from './server.js';

const appView = (r: ApplicationRow) => ({
  application: r.name,
  address: r.address,
  rpc_grants: r.rpc_grants,
  created_at: r.created_at,
  updated_at: r.updated_at,
});

export const actionView = (r: ActionRow) => ({
  action: r.name,
  application: r.application,
  description: r.description,
  subscribers: r.subscribers,
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

const grantsSchema = {
  type: 'array',
  maxItems: 100,
  items: { type: 'string', maxLength: 256 },
  description: 'RPC methods this application may call through the gateway: domain.type.method, * for any one segment',
} as const;

const subscribersSchema = {
  type: ['array', 'null'],
  maxItems: 1000,
  items: { type: 'string', maxLength: 63 },
  description: 'applications allowed to subscribe besides the owner; null or absent: every application',
} as const;

/** Seed 000's dialect: `microservice`/`passphrase`/`location` for `application`/`secret`/`address`. */
function applicationInput(body: Record<string, unknown>) {
  return {
    application: (body.application ?? body.microservice) as string,
    address: (body.address ?? body.location ?? null) as string | null,
    secret: (body.secret ?? body.passphrase) as string | undefined,
    ...(body.rpc_grants !== undefined ? { rpc_grants: body.rpc_grants as string[] } : {}),
  };
}

export async function registryRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { registry, auth, pool } = ctx;

  const createApp = {
    config: { auth: 'admin' as const },
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
          rpc_grants: grantsSchema,
        },
        anyOf: [{ required: ['application'] }, { required: ['microservice'] }],
      },
    },
  };
  const create = async (req: FastifyRequest, reply: FastifyReply) => {
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
    const q = (req.query as { q?: string }).q;
    return { items: (await sql.listApplications(pool, q)).map(appView) };
  };
  const listOpts = {
    config: { auth: 'admin' as const },
    schema: {
      tags: ['applications'],
      querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 255 } } },
    },
  };
  app.get('/v1/applications', listOpts, list);
  app.get('/v1/producers', listOpts, list);

  app.get('/v1/applications/:name', { schema: { tags: ['applications'], params: nameParam } }, async (req) => {
    const { name } = req.params as { name: string };
    auth.actsFor(req.principal, name);
    return appView(await registry.requireApplication(name));
  });

  app.patch(
    '/v1/applications/:name',
    {
      schema: {
        tags: ['applications'],
        summary: 'Change the address (the application or admin) or the RPC grants (admin only)',
        params: nameParam,
        body: {
          type: 'object',
          properties: { address: { type: ['string', 'null'], maxLength: 2048 }, rpc_grants: grantsSchema },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const { name } = req.params as { name: string };
      auth.actsFor(req.principal, name);
      const b = req.body as { address?: string | null; rpc_grants?: string[] };
      if (b.rpc_grants !== undefined && req.principal.kind !== 'admin')
        throw new AmeboError('FORBIDDEN', 'only the admin grants RPC methods');
      return appView(await registry.updateApplication(name, b));
    },
  );

  app.delete(
    '/v1/applications/:name',
    { config: { auth: 'admin' }, schema: { tags: ['applications'], params: nameParam } },
    async (req, reply) => {
      const { name } = req.params as { name: string };
      if (!(await registry.deleteApplication(name)))
        throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${name}"`);
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
      auth.actsFor(req.principal, name);
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
      config: { auth: { bodySecret: true } },
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
            subscribers: subscribersSchema,
            secret: { type: 'string', maxLength: 512 },
          },
          required: ['action'],
          anyOf: [{ required: ['application'] }, { required: ['microservice'] }],
        },
      },
    },
    async (req, reply) => {
      const b = req.body as Record<string, unknown>;
      const application = (b.application ?? b.microservice) as string;
      auth.actsFor(req.principal, application);
      const row = await registry.createAction({
        action: b.action as string,
        application,
        schemata: b.schemata ?? {},
        description: (b.description as string | null | undefined) ?? null,
        subscribers: (b.subscribers as string[] | null | undefined) ?? null,
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
      const q = req.query as { application?: string; q?: string };
      return { items: (await sql.listActions(pool, q)).map(actionView) };
    },
  );

  app.get('/v1/actions/:name', { schema: { tags: ['actions'], params: nameParam } }, async (req) => {
    return actionView((await registry.requireAction((req.params as { name: string }).name)).row);
  });

  app.patch(
    '/v1/actions/:name',
    {
      schema: {
        tags: ['actions'],
        summary: 'Change who may subscribe (subscribers) or the description (the owner or admin)',
        params: nameParam,
        body: {
          type: 'object',
          properties: { subscribers: subscribersSchema, description: { type: ['string', 'null'], maxLength: 4096 } },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const { name } = req.params as { name: string };
      const action = await registry.requireAction(name);
      auth.actsFor(req.principal, action.row.application);
      return actionView(await registry.updateAction(name, req.body as { subscribers?: string[] | null }));
    },
  );

  app.get('/v1/actions/:name/versions', { schema: { tags: ['actions'], params: nameParam } }, async (req) => {
    const { name } = req.params as { name: string };
    await registry.requireAction(name);
    return { items: await sql.listActionVersions(pool, name) };
  });

  app.put(
    '/v1/actions/:name/schema',
    {
      config: {
        auth: {
          bodySecret: true,
          fallbackApplication: async (req) =>
            (await registry.getAction((req.params as { name: string }).name))?.row.application,
        },
      },
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
          properties: {
            schemata: { type: ['object', 'string', 'boolean'] },
            secret: { type: 'string', maxLength: 512 },
          },
          required: ['schemata'],
        },
      },
    },
    async (req) => {
      const { name } = req.params as { name: string };
      const action = await registry.requireAction(name);
      auth.actsFor(req.principal, action.row.application);
      const mode = (req.query as { compatibility?: 'BACKWARD' | 'FORWARD' | 'FULL' | 'NONE' }).compatibility;
      return actionView(await registry.updateSchema(name, (req.body as { schemata: unknown }).schemata, mode));
    },
  );
}

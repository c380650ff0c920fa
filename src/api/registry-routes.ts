import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AmeboError } from '../errors.js';
import { redactUrl } from '../log.js';
import type { ApplicationRow, ActionRow } from '../store/registry.js';
import { bodyString, param } from './auth.js';
import { listOf, NAME_PARAM, NO_CONTENT, record, replies, typed } from './schemas.js';
import type { ApiContext } from './server.js';

const appView = (r: ApplicationRow) => ({
  application: r.name,
  // Credentials in the address (https://user:pass@host/) are redacted, as in a subscription's handler.
  address: r.address === null ? null : redactUrl(r.address),
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

const createAppBody = {
  type: 'object',
  properties: {
    application: { type: 'string', maxLength: 63 },
    microservice: { type: 'string', maxLength: 63, description: 'seed 000 alias of application' },
    address: { type: ['string', 'null'], maxLength: 2048 },
    location: { type: ['string', 'null'], maxLength: 2048, description: 'seed 000 alias of address' },
    secret: { type: 'string', minLength: 16, maxLength: 512 },
    passphrase: { type: 'string', minLength: 16, maxLength: 512, description: 'seed 000 alias of secret' },
    rpc_grants: grantsSchema,
  },
  anyOf: [{ required: ['application'] }, { required: ['microservice'] }],
} as const;

const createdApp = {
  type: 'object',
  properties: {
    application: { type: 'string' },
    address: { type: ['string', 'null'] },
    rpc_grants: { type: 'array', items: { type: 'string' } },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
    secret: { type: 'string', description: 'shown only here' },
  },
  required: ['application', 'address', 'rpc_grants', 'created_at', 'updated_at', 'secret'],
} as const;

/** A new schema version (saved or only checked) and the compatibility mode it is held to. */
const COMPATIBILITY_QUERY = {
  type: 'object',
  properties: { compatibility: { enum: ['BACKWARD', 'FORWARD', 'FULL', 'NONE'] } },
} as const;
const SCHEMA_BODY = {
  type: 'object',
  properties: {
    schemata: { type: ['object', 'string', 'boolean'] },
    secret: { type: 'string', maxLength: 512 },
  },
  required: ['schemata'],
} as const;

/** The application a body names: `application`, or seed 000's `microservice` (the schema requires one). */
function namedApplication(b: { application?: string; microservice?: string }): string {
  const name = b.application ?? b.microservice;
  if (name === undefined)
    throw new AmeboError('VALIDATION', 'application is required', [{ instancePath: '/application' }]);
  return name;
}

export async function registryRoutes(scope: FastifyInstance, ctx: ApiContext): Promise<void> {
  const app = typed(scope);
  const { registry } = ctx;
  /** Routes addressing an action act for its owner. */
  const actionOwner = async (req: FastifyRequest) => {
    const name = param(req, 'name');
    return name === undefined ? undefined : (await registry.getAction(name))?.row.application;
  };

  for (const [url, summary] of [
    ['/v1/applications', 'Register an application (admin); the secret is shown only here'],
    ['/v1/producers', 'Seed 000 alias of POST /v1/applications'],
  ] as const)
    app.post(
      url,
      {
        config: { auth: 'admin' },
        schema: { tags: ['applications'], summary, body: createAppBody, response: replies({ 201: createdApp }) },
      },
      async (req, reply) => {
        const b = req.body;
        const { row, secret } = await registry.createApplication({
          application: namedApplication(b),
          address: b.address ?? b.location ?? null,
          secret: b.secret ?? b.passphrase,
          ...(b.rpc_grants !== undefined ? { rpc_grants: [...b.rpc_grants] } : {}),
        });
        return reply.status(201).send({ ...appView(row), secret });
      },
    );

  for (const url of ['/v1/applications', '/v1/producers'])
    app.get(
      url,
      {
        config: { auth: 'admin' },
        schema: {
          tags: ['applications'],
          querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 255 } } },
          response: replies({ 200: listOf('Application#') }),
        },
      },
      async (req) => ({ items: (await registry.listApplications(req.query.q)).map(appView) }),
    );

  app.get(
    '/v1/applications/:name',
    {
      config: { auth: { owner: (req) => param(req, 'name') } },
      schema: { tags: ['applications'], params: NAME_PARAM, response: replies({ 200: { $ref: 'Application#' } }) },
    },
    async (req) => appView(await registry.requireApplication(req.params.name)),
  );

  app.patch(
    '/v1/applications/:name',
    {
      config: { auth: { owner: (req) => param(req, 'name') } },
      schema: {
        tags: ['applications'],
        summary: 'Change the address (the application or admin) or the RPC grants (admin only)',
        params: NAME_PARAM,
        body: {
          type: 'object',
          properties: { address: { type: ['string', 'null'], maxLength: 2048 }, rpc_grants: grantsSchema },
          additionalProperties: false,
        },
        response: replies({ 200: { $ref: 'Application#' } }),
      },
    },
    async (req) => {
      const b = req.body;
      if (b.rpc_grants !== undefined && req.principal.kind !== 'admin')
        throw new AmeboError('FORBIDDEN', 'only the admin grants RPC methods');
      return appView(
        await registry.updateApplication(req.params.name, {
          ...('address' in b ? { address: b.address ?? null } : {}),
          ...(b.rpc_grants !== undefined ? { rpc_grants: [...b.rpc_grants] } : {}),
        }),
      );
    },
  );

  app.delete(
    '/v1/applications/:name',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['applications'],
        summary: 'Delete an application with its actions and subscriptions (their queues too)',
        params: NAME_PARAM,
        response: replies({ 204: NO_CONTENT }),
      },
    },
    async (req, reply) => {
      const { name } = req.params;
      if (!(await registry.deleteApplication(name)))
        throw new AmeboError('APPLICATION_NOT_FOUND', `no application "${name}"`);
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/v1/applications/:name/secret',
    {
      config: { auth: { owner: (req) => param(req, 'name') } },
      schema: {
        tags: ['applications'],
        summary: 'Rotate the application secret; the new one is shown only here',
        params: NAME_PARAM,
        body: { type: ['object', 'null'], properties: { secret: { type: 'string', minLength: 16, maxLength: 512 } } },
        response: replies({
          200: {
            type: 'object',
            properties: { application: { type: 'string' }, secret: { type: 'string' } },
            required: ['application', 'secret'],
          },
        }),
      },
    },
    async (req) => {
      const { name } = req.params;
      return { application: name, secret: await registry.rotateApplicationSecret(name, req.body?.secret) };
    },
  );

  // ---------------------------------------------------------------- actions
  app.post(
    '/v1/actions',
    {
      config: { auth: { bodySecret: true, owner: (req) => bodyString(req, 'application', 'microservice') } },
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
        response: replies({ 201: { $ref: 'Action#' } }),
      },
    },
    async (req, reply) => {
      const b = req.body;
      const row = await registry.createAction({
        action: b.action,
        application: namedApplication(b),
        schemata: b.schemata ?? {},
        description: b.description ?? null,
        subscribers: b.subscribers ? [...b.subscribers] : null,
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
        response: replies({ 200: listOf('Action#') }),
      },
    },
    async (req) => ({ items: (await registry.listActions(req.query)).map(actionView) }),
  );

  app.get(
    '/v1/actions/:name',
    { schema: { tags: ['actions'], params: NAME_PARAM, response: replies({ 200: { $ref: 'Action#' } }) } },
    async (req) => actionView((await registry.requireAction(req.params.name)).row),
  );

  app.patch(
    '/v1/actions/:name',
    {
      config: { auth: { owner: actionOwner } },
      schema: {
        tags: ['actions'],
        summary: 'Change who may subscribe (subscribers) or the description (the owner or admin)',
        params: NAME_PARAM,
        body: {
          type: 'object',
          properties: { subscribers: subscribersSchema, description: { type: ['string', 'null'], maxLength: 4096 } },
          additionalProperties: false,
        },
        response: replies({ 200: { $ref: 'Action#' } }),
      },
    },
    async (req) => {
      const b = req.body;
      return actionView(
        await registry.updateAction(req.params.name, {
          ...('subscribers' in b ? { subscribers: b.subscribers ? [...b.subscribers] : null } : {}),
          ...('description' in b ? { description: b.description ?? null } : {}),
        }),
      );
    },
  );

  app.delete(
    '/v1/actions/:name',
    {
      config: { auth: { owner: actionOwner } },
      schema: {
        tags: ['actions'],
        summary:
          'Delete an action with its schema versions (the owner or admin); 409 AMEBO_ERR_CONFLICT while a subscription names it exactly (details list them). Patterns that match it do not block; stored events keep their action name',
        params: NAME_PARAM,
        response: replies({ 204: NO_CONTENT }),
      },
    },
    async (req, reply) => {
      const { name } = req.params;
      if (!(await registry.deleteAction(name))) throw new AmeboError('ACTION_NOT_FOUND', `no action "${name}"`);
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/v1/actions/:name/versions',
    {
      schema: {
        tags: ['actions'],
        summary: "Every version of the action's schema, oldest first",
        params: NAME_PARAM,
        response: replies({ 200: listOf('ActionVersion#') }),
      },
    },
    async (req) => ({ items: await registry.listActionVersions(req.params.name) }),
  );

  app.put(
    '/v1/actions/:name/schema',
    {
      config: { auth: { bodySecret: true, fallbackApplication: actionOwner, owner: actionOwner } },
      schema: {
        tags: ['actions'],
        summary: 'Add a schema version (checked for compatibility, default BACKWARD)',
        params: NAME_PARAM,
        querystring: COMPATIBILITY_QUERY,
        body: SCHEMA_BODY,
        response: replies({ 200: { $ref: 'Action#' } }),
      },
    },
    async (req) => actionView(await registry.updateSchema(req.params.name, req.body.schemata, req.query.compatibility)),
  );

  app.post(
    '/v1/actions/:name/schema/check',
    {
      config: { auth: { bodySecret: true, fallbackApplication: actionOwner, owner: actionOwner } },
      schema: {
        tags: ['actions'],
        summary:
          'Dry run of PUT /v1/actions/:name/schema: the same compatibility check, nothing stored. 200 with compatible true and the version a save would create, or compatible false with each violation (422 when not a valid JSON Schema)',
        params: NAME_PARAM,
        querystring: COMPATIBILITY_QUERY,
        body: SCHEMA_BODY,
        response: replies({
          200: record(
            {
              action: { type: 'string' },
              compatible: { type: 'boolean' },
              mode: { enum: ['BACKWARD', 'FORWARD', 'FULL', 'NONE'] },
              current_version: { type: 'integer', description: 'the version checked against' },
              version: { type: 'integer', description: 'the version a save would create (when compatible)' },
              violations: {
                type: 'array',
                items: { type: 'string' },
                description: 'each break of the mode (empty when compatible)',
              },
            },
            ['version'],
          ),
        }),
      },
    },
    async (req) => {
      const { name } = req.params;
      const c = await registry.checkSchema(name, req.body.schemata, req.query.compatibility);
      const compatible = c.problems.length === 0;
      return {
        action: name,
        compatible,
        mode: c.mode,
        current_version: c.current.version,
        ...(compatible ? { version: c.current.version + 1 } : {}),
        violations: c.problems,
      };
    },
  );
}

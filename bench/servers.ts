/**
 * The bare baseline of the publish benchmark, in its own process so the load generator does not
 * share its event loop: a plain fastify JSON POST endpoint that parses the body and validates it
 * against the same JSON schema Amebo applies to the event (the envelope plus the action's payload
 * schema), then answers 202 with a small JSON body. Prints `READY <port>` when listening.
 * (Amebo itself runs as `node bin/amebo.js serve`: see amebo-child.ts.)
 */
import Fastify from 'fastify';
import { ORDER_SCHEMA } from './payload.js';

const app = Fastify({ logger: false });
app.post(
  '/ingest',
  {
    schema: {
      body: {
        type: 'object',
        properties: { action: { type: 'string' }, payload: ORDER_SCHEMA },
        required: ['action', 'payload'],
      },
    },
  },
  async (req, reply) => reply.status(202).send({ ok: true, n: Object.keys(req.body as object).length }),
);
await app.listen({ host: '127.0.0.1', port: 0 });
const addr = app.server.address();
process.stdout.write(`READY ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));

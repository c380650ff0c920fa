/**
 * Servers the publish benchmark loads, each in its own process so the load generator does not
 * share their event loop: `bare` is a plain fastify JSON POST endpoint, `amebo` a full Amebo
 * (API + relay) on fresh stores. Prints `READY <port>` when listening.
 */
import Fastify from 'fastify';
import { startAmebo } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';

const which = process.argv[2];
if (which === 'bare') {
  const app = Fastify({ logger: false });
  app.post('/ingest', async (req, reply) =>
    reply.status(202).send({ ok: true, n: Object.keys(req.body as object).length }),
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  process.stdout.write(`READY ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
} else {
  const cfg = loadConfig({ address: '127.0.0.1:0', roles: 'api,relay', logLevel: 'warn' });
  const amebo = await startAmebo(cfg, createLogger(cfg.logLevel), { listen: false });
  await amebo.api!.listen({ host: '127.0.0.1', port: 0 });
  const addr = amebo.api!.server.address();
  process.stdout.write(`READY ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
  process.on('SIGTERM', () => void amebo.close().then(() => process.exit(0)));
}

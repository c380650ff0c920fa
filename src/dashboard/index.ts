/**
 * The dashboard (design §10): served by the api role at `/`, no build step. Preact, htm and uPlot
 * (charts) come straight from node_modules through an import map, uPlot's stylesheet as a file; the
 * page talks to the same HTTP API and websocket as everyone else, with the admin token the operator
 * types in (kept in sessionStorage, handed to the operator's other tabs over a BroadcastChannel).
 * A strict Content-Security-Policy allows only this origin's scripts and styles plus the import
 * map's hash: no inline script or style anywhere.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { AmeboError } from '../errors.js';

const require = createRequire(import.meta.url);
/**
 * The page's files. Beside this module when it runs from the sources; from a build (dist/src/...)
 * they are the package's own src/dashboard/static, which the package ships (tsc copies no assets).
 */
export const STATIC = ((here: URL): URL =>
  existsSync(new URL('index.html', here)) ? here : new URL('../../../src/dashboard/static/', import.meta.url))(
  new URL('./static/', import.meta.url),
);

/** Browser modules served from node_modules, by the name the import map gives them. */
// (Their exports maps hide the browser builds, so they are found next to the entry points.)
const beside = (entry: string, file: string): string => join(dirname(require.resolve(entry)), file);
const VENDOR: Record<string, string> = {
  'preact.mjs': beside('preact', 'preact.module.js'),
  'hooks.mjs': beside('preact/hooks', 'hooks.module.js'),
  'htm.mjs': beside('htm', 'htm.module.js'),
  'uplot.mjs': beside('uplot', 'uPlot.esm.js'),
  'uplot.css': beside('uplot', 'uPlot.min.css'),
};
const TYPES: Record<string, string> = { js: 'text/javascript', mjs: 'text/javascript', css: 'text/css' };
const typeOf = (name: string): string | undefined => TYPES[name.slice(name.lastIndexOf('.') + 1)];

export async function dashboardRoutes(app: FastifyInstance): Promise<void> {
  const importMap = JSON.stringify({
    imports: {
      preact: '/ui/vendor/preact.mjs',
      'preact/hooks': '/ui/vendor/hooks.mjs',
      htm: '/ui/vendor/htm.mjs',
      uplot: '/ui/vendor/uplot.mjs',
    },
  });
  const mapHash = createHash('sha256').update(importMap).digest('base64');
  // The whole element is rewritten: the CSP hash covers the script's exact text, whitespace included.
  const html = readFileSync(new URL('index.html', STATIC), 'utf8').replace(
    /<script type="importmap">[\s\S]*?<\/script>/,
    () => `<script type="importmap">${importMap}</script>`,
  );
  const csp = [
    "default-src 'self'",
    `script-src 'self' 'sha256-${mapHash}'`,
    "connect-src 'self' ws: wss:",
    "style-src 'self'",
    "img-src 'self' data:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
  const assets = new Map<string, { body: string; type: string }>();
  for (const [name, path] of Object.entries(VENDOR))
    assets.set(`vendor/${name}`, { body: readFileSync(path, 'utf8'), type: typeOf(name)! });
  // Every script and stylesheet of the static folder (the page's modules import each other).
  for (const name of readdirSync(STATIC)) {
    const type = typeOf(name);
    if (type) assets.set(name, { body: readFileSync(new URL(name, STATIC), 'utf8'), type });
  }

  const page = async (_req: unknown, reply: import('fastify').FastifyReply) =>
    reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('content-security-policy', csp)
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-cache')
      .send(html);
  app.get('/', { schema: { hide: true } }, page);
  app.get('/ui', { schema: { hide: true } }, page);
  app.get('/ui/*', { schema: { hide: true } }, async (req, reply) => {
    const a = assets.get((req.params as { '*': string })['*']);
    if (!a) throw new AmeboError('NOT_FOUND', 'no such dashboard file');
    return reply
      .header('content-type', `${a.type}; charset=utf-8`)
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-cache')
      .send(a.body);
  });
}

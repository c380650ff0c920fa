/**
 * The package as a consumer sees it: built with `npm run build`'s config, installed under
 * node_modules/amebo, imported by name (`amebo`, `amebo/fabric`, `amebo/sdk`), typed, and working
 * (an RPC round trip through the built code against the real broker).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AMQP_URL } from './helpers/harness.js';

const run = promisify(execFile);
const repo = new URL('..', import.meta.url).pathname;
let tmp: string;
let consumer: string;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'amebo-pkg-'));
  const pkg = join(tmp, 'amebo');
  await mkdir(pkg);
  await cp(join(repo, 'package.json'), join(pkg, 'package.json'));
  await symlink(join(repo, 'migrations'), join(pkg, 'migrations'));
  await symlink(join(repo, 'src'), join(pkg, 'src'));
  await symlink(join(repo, 'node_modules'), join(pkg, 'node_modules'));
  await run(
    process.execPath,
    [
      join(repo, 'node_modules/typescript/bin/tsc'),
      '-p',
      join(repo, 'tsconfig.build.json'),
      '--outDir',
      join(pkg, 'dist'),
    ],
    {
      timeout: 120_000,
    },
  );
  consumer = join(tmp, 'consumer');
  await mkdir(join(consumer, 'node_modules'), { recursive: true });
  await symlink(pkg, join(consumer, 'node_modules', 'amebo'));
  await writeFile(join(consumer, 'package.json'), JSON.stringify({ type: 'module', private: true }));
});
after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

test('amebo, amebo/fabric and amebo/sdk import by name from the build and make an RPC round trip', async () => {
  await writeFile(
    join(consumer, 'main.mjs'),
    `import { FabricConnector, consume, loadConfig, startServer, AmeboError } from 'amebo';
import * as fabric from 'amebo/fabric';
import * as sdk from 'amebo/sdk';
const [url, domain] = process.argv.slice(2);
const svc = new FabricConnector({ amqpUrl: url, domain, type: 'calc', id: 'c1' });
const cli = new FabricConnector({ amqpUrl: url, domain, type: 'app', id: 'a1' });
await svc.open({ timeoutMs: 10000 });
await cli.open({ timeoutMs: 10000 });
await svc.rpcRegister({ add: ({ a, b }) => a + b });
const calc = await cli.rpcProxy(domain, 'c1', 'calc', { timeoutMs: 5000 });
const sum = await calc.add({ a: 2, b: 40 });
await cli.close();
await svc.close();
console.log(JSON.stringify({
  sum,
  sameFabric: fabric.FabricConnector === FabricConnector,
  sameSdk: sdk.consume === consume,
  kinds: [typeof loadConfig, typeof startServer, typeof AmeboError],
}));
`,
  );
  const domain = `tpkg${process.pid}`;
  const { stdout } = await run(process.execPath, ['main.mjs', AMQP_URL, domain], { cwd: consumer, timeout: 60_000 });
  assert.deepEqual(JSON.parse(stdout.trim().split('\n').pop()!), {
    sum: 42,
    sameFabric: true,
    sameSdk: true,
    kinds: ['function', 'function', 'function'],
  });
});

test('the published types check a consumer: typed proxies, and wrong options are compile errors', async () => {
  await writeFile(
    join(consumer, 'check.ts'),
    `import { FabricConnector, RemoteError, type ServiceInfo } from 'amebo';
import { consume, type AmeboEvent } from 'amebo/sdk';
const c = new FabricConnector({ amqpUrl: 'amqp://x', domain: 'd', type: 't', id: 'i' });
const p = await c.rpcProxy<{ add(a: { a: number; b: number }): number }>('d', 'i', 't', { timeoutMs: 1 });
const n: number = await p.add({ a: 1, b: 2 });
// @ts-expect-error the proxy knows add's argument type
await p.add({ a: 'one', b: 2 });
// @ts-expect-error domain is required
new FabricConnector({ amqpUrl: 'amqp://x', type: 't', id: 'i' });
const list: ServiceInfo[] = await c.listServices({ domain: 'd' });
const e = new RemoteError('ValueError', 'bad');
const t: string = e.type;
void consume;
export type { AmeboEvent };
export { n, list, t };
`,
  );
  await writeFile(
    join(consumer, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: [],
      },
      files: ['check.ts'],
    }),
  );
  const r = await run(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], {
    cwd: consumer,
    timeout: 120_000,
  }).catch((err: { stdout?: string; stderr?: string }) => ({
    stdout: err.stdout ?? '',
    stderr: err.stderr ?? '',
    failed: true,
  }));
  assert.ok(!('failed' in r), `the consumer does not type-check:\n${r.stdout}${r.stderr}`);
});

test('the build finds the dashboard page (tsc copies no assets: it is read from the shipped src)', async () => {
  await writeFile(
    join(consumer, 'static.mjs'),
    `import { existsSync } from 'node:fs';
const { STATIC } = await import(new URL('./node_modules/amebo/dist/src/dashboard/index.js', import.meta.url).href);
console.log(JSON.stringify({ built: STATIC.pathname.includes('/dist/'), page: existsSync(new URL('index.html', STATIC)) }));
`,
  );
  const { stdout } = await run(process.execPath, ['static.mjs'], { cwd: consumer, timeout: 60_000 });
  assert.deepEqual(JSON.parse(stdout.trim().split('\n').pop()!), { built: false, page: true });
});

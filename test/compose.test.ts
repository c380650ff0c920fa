import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { OPTIONS, loadConfig } from '../src/config.js';

// Docker is not available where the tests run: these checks read docker-compose.yml, the Dockerfile
// and the CI scripts, and assert what `docker compose up` and CI rely on.

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (file: string): string => readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');

type Healthcheck = { test?: string | string[]; interval?: string; retries?: number };
type Service = {
  image?: string;
  build?: string | { context: string };
  ports?: (string | { target: number; published: string | number })[];
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: Healthcheck;
  volumes?: string[];
};
type Compose = { services?: Record<string, Service>; volumes?: Record<string, unknown> };

const compose = parse(read('docker-compose.yml')) as Compose;
const services = compose.services ?? {};

function service(name: string): Service {
  const s = services[name];
  assert.ok(s, `docker-compose.yml has no service ${name}`);
  return s;
}

/** What compose substitutes when the variable is unset: `${VAR:-default}` → default, `${VAR}` → ''. */
function interpolateDefaults(value: string): string {
  return value.replace(/\$\{(\w+)(?::?-([^}]*))?\}/g, (_m, _name: string, fallback?: string) => fallback ?? '');
}

function environment(s: Service): Record<string, string> {
  const env = s.environment ?? {};
  const pairs: [string, string][] = Array.isArray(env)
    ? env.map((line): [string, string] => {
        const eq = line.indexOf('=');
        return eq < 0 ? [line, ''] : [line.slice(0, eq), line.slice(eq + 1)];
      })
    : Object.entries(env).map(([k, v]): [string, string] => [k, v === null ? '' : String(v)]);
  return Object.fromEntries(pairs.map(([k, v]) => [k, interpolateDefaults(v)]));
}

test('docker-compose.yml defines rabbitmq, postgres, redis and amebo', () => {
  for (const name of ['rabbitmq', 'postgres', 'redis', 'amebo']) service(name);
  assert.match(service('rabbitmq').image ?? '', /^rabbitmq:3\.13-management$/);
  assert.match(service('postgres').image ?? '', /^postgres:16/);
  assert.match(service('redis').image ?? '', /^redis:7/);
  const build = service('amebo').build;
  assert.equal(typeof build === 'string' ? build : build?.context, '.', 'amebo is built from this repository');
});

test('every service has a healthcheck with a test command', () => {
  const expected: Record<string, RegExp> = {
    rabbitmq: /rabbitmq-diagnostics.*ping/,
    postgres: /pg_isready/,
    redis: /redis-cli.*ping/,
    amebo: /http:\/\/127\.0\.0\.1:8701\/health/,
  };
  for (const [name, pattern] of Object.entries(expected)) {
    const check = service(name).healthcheck?.test;
    assert.ok(check !== undefined && check.length > 0, `${name} has no healthcheck test`);
    if (Array.isArray(check)) {
      assert.ok(
        check[0] === 'CMD' || check[0] === 'CMD-SHELL',
        `${name}: an exec-form healthcheck starts with CMD or CMD-SHELL`,
      );
      assert.ok(check.length > 1, `${name}: the healthcheck names a command`);
    }
    assert.match(Array.isArray(check) ? check.join(' ') : check, pattern, `${name} healthcheck`);
  }
});

test('amebo waits for the three services to be healthy', () => {
  const deps = service('amebo').depends_on;
  assert.ok(deps && !Array.isArray(deps), 'depends_on uses the long form (conditions)');
  for (const name of ['rabbitmq', 'postgres', 'redis']) {
    assert.equal(deps[name]?.condition, 'service_healthy', `amebo depends_on ${name} with service_healthy`);
  }
});

test("amebo's environment points at the compose services", () => {
  const env = environment(service('amebo'));
  const amqp = new URL(env.AMEBO_AMQP_URL ?? '');
  assert.equal(amqp.protocol, 'amqp:');
  assert.equal(amqp.hostname, 'rabbitmq');
  assert.equal(amqp.port || '5672', '5672');

  const db = new URL(env.AMEBO_DATABASE_URL ?? '');
  assert.match(db.protocol, /^postgres(ql)?:$/);
  assert.equal(db.hostname, 'postgres');
  assert.equal(db.port || '5432', '5432');
  assert.equal(db.pathname, '/amebo');
  // The password amebo uses is the one the postgres service is initialised with.
  const pg = environment(service('postgres'));
  if (pg.POSTGRES_HOST_AUTH_METHOD !== 'trust') {
    assert.ok(pg.POSTGRES_PASSWORD, 'postgres has a password or trust auth');
    assert.equal(decodeURIComponent(db.password), pg.POSTGRES_PASSWORD);
  }

  const redis = new URL(env.AMEBO_REDIS_URL ?? '');
  assert.equal(redis.protocol, 'redis:');
  assert.equal(redis.hostname, 'redis');
  assert.equal(redis.port || '6379', '6379');

  assert.equal(env.AMEBO_BLOCK_PRIVATE_TARGETS, 'true');
  assert.ok((env.AMEBO_ADMIN_TOKEN ?? '').length > 0, 'an admin token is set');
  assert.ok((env.AMEBO_SECRET_KEY ?? '').length >= 16, 'the secret key default is long enough for config');

  // Every AMEBO_* variable set in compose is one the config module reads (no silently ignored typo).
  const known = new Set(Object.values(OPTIONS).map((o) => o.env));
  for (const key of Object.keys(env)) assert.ok(known.has(key), `${key} is not a configuration variable`);
  // ...and the config module accepts the whole environment (plus the Dockerfile's address).
  const cfg = loadConfig({}, { ...env, AMEBO_ADDRESS: '0.0.0.0:8701' });
  assert.equal(cfg.blockPrivateTargets, true);
  assert.equal(cfg.amqpUrl, env.AMEBO_AMQP_URL);
});

test('the API port 8701 is published', () => {
  const ports = service('amebo').ports ?? [];
  const published = ports.some((p) =>
    typeof p === 'string'
      ? /^(?:[\d.]+:)?8701:8701(?:\/tcp)?$/.test(p)
      : p.target === 8701 && String(p.published) === '8701',
  );
  assert.ok(published, `8701:8701 is published (ports: ${JSON.stringify(ports)})`);
});

test('postgres and rabbitmq keep their data in named volumes', () => {
  const named = Object.keys(compose.volumes ?? {});
  for (const [name, dataDir] of [
    ['postgres', '/var/lib/postgresql/data'],
    ['rabbitmq', '/var/lib/rabbitmq'],
  ] as const) {
    const mount = (service(name).volumes ?? []).find((v) => v.endsWith(`:${dataDir}`));
    assert.ok(mount, `${name} mounts a volume at ${dataDir}`);
    const volume = mount.slice(0, -dataDir.length - 1);
    assert.ok(named.includes(volume), `${volume} is a named volume`);
  }
});

test('the Dockerfile runs `amebo serve` on 0.0.0.0:8701 as a non-root user, with a healthcheck', () => {
  const dockerfile = read('Dockerfile');
  const lines = dockerfile.split('\n').filter((l) => !l.trimStart().startsWith('#'));
  const text = lines.join('\n');
  assert.match(text, /^FROM node:20-bookworm-slim\b/m);
  assert.match(text, /^RUN npm ci --omit=dev\b/m);
  assert.match(text, /^EXPOSE 8701$/m);
  assert.match(text, /^HEALTHCHECK\b[^]*?http:\/\/127\.0\.0\.1:8701\/health/m);

  const cmd = /^CMD (\[.*\])$/m.exec(text);
  assert.ok(cmd?.[1], 'CMD in exec form');
  const argv = JSON.parse(cmd[1]) as string[];
  assert.deepEqual(argv.slice(0, 3), ['node', 'bin/amebo.js', 'serve']);
  assert.equal(argv[argv.indexOf('--address') + 1], '0.0.0.0:8701');

  const users = [...text.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
  assert.ok(users.length > 0, 'the Dockerfile switches user');
  assert.ok(!['root', '0'].includes(users.at(-1) ?? 'root'), 'the final user is not root');

  const ignored = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim());
  for (const entry of ['node_modules', '.git']) assert.ok(ignored.includes(entry), `.dockerignore lists ${entry}`);
});

test('.ci/run is an executable bash script that brings up services and runs npm test', () => {
  const path = new URL('../.ci/run', import.meta.url);
  assert.ok((statSync(path).mode & 0o111) !== 0, '.ci/run is executable');
  const script = readFileSync(path, 'utf8');
  assert.match(script, /^#!\/usr\/bin\/env bash\n/);
  assert.match(script, /scripts\/services\.sh/);
  assert.match(script, /\bnpm test\b/);
  assert.match(script, /\bnpm ci\b/);
  for (const file of ['.ci/run', 'scripts/services.sh']) {
    const syntax = spawnSync('bash', ['-n', file], { cwd: root, encoding: 'utf8' });
    assert.equal(syntax.status, 0, `${file} parses: ${syntax.stderr}`);
  }
});

test('scripts/services.sh honours AMEBO_SKIP_SERVICES and rejects unknown arguments', () => {
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync('bash', ['scripts/services.sh', ...args], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, ...env },
      timeout: 10_000,
    });
  const skipped = run(['--extras'], { AMEBO_SKIP_SERVICES: '1' });
  assert.equal(skipped.status, 0);
  assert.equal(skipped.stdout, '');
  const bad = run(['--no-such-flag'], { AMEBO_SKIP_SERVICES: '0' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown argument/);
});

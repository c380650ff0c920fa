import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { amqpNodes } from '../src/broker/link.js';

// Issue "Production on a RabbitMQ cluster" §3: docker-compose.cluster.yml runs three clustered
// RabbitMQ nodes, PostgreSQL, Redis, two `--role api,relay` and two `--role bridge` Amebo processes,
// each listing the three nodes. Docker is not available where the tests run: this reads the file.

type Service = {
  image?: string;
  build?: unknown;
  command?: string[];
  hostname?: string;
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition?: string }>;
  ulimits?: { nofile?: { soft?: number; hard?: number } };
  configs?: { source: string; target: string }[];
  healthcheck?: unknown;
};
const compose = parse(readFileSync(new URL('../docker-compose.cluster.yml', import.meta.url), 'utf8')) as {
  services: Record<string, Service>;
  configs: Record<string, { content: string }>;
};
const services = Object.entries(compose.services);
const root = fileURLToPath(new URL('..', import.meta.url));
const defaults = (v: string): string => v.replace(/\$\{\w+:-([^}]*)\}/g, '$1');

test('three RabbitMQ nodes clustered with each other, PostgreSQL and Redis', () => {
  const rabbits = services.filter(([, s]) => /^rabbitmq:/.test(s.image ?? ''));
  assert.deepEqual(
    rabbits.map(([name]) => name),
    ['rabbitmq1', 'rabbitmq2', 'rabbitmq3'],
  );
  const cookies = new Set(rabbits.map(([, s]) => s.environment?.RABBITMQ_ERLANG_COOKIE));
  assert.equal(cookies.size, 1, 'one Erlang cookie for the three');
  for (const [name, s] of rabbits) {
    assert.equal(s.hostname, name, `${name}: its node name is rabbit@${name}`);
    assert.equal(s.ulimits?.nofile?.soft, 65536, `${name}: open files for quorum queues`);
    assert.ok(s.healthcheck, `${name}: healthcheck`);
    const conf = s.configs?.find((c) => c.target.startsWith('/etc/rabbitmq/conf.d/'));
    assert.ok(conf, `${name}: cluster formation config`);
    const content = compose.configs[conf.source]!.content;
    for (const peer of ['rabbitmq1', 'rabbitmq2', 'rabbitmq3'])
      assert.match(content, new RegExp(`classic_config\\.nodes\\.\\d = rabbit@${peer}\\b`), `${name} knows ${peer}`);
  }
  assert.match(compose.services.postgres?.image ?? '', /^postgres:/);
  assert.match(compose.services.redis?.image ?? '', /^redis:/);
});

test('two api,relay and two bridge processes, each listing the three nodes and sharing their secrets', () => {
  const amebos = services.filter(([, s]) => s.command?.includes('serve'));
  const roleOf = (s: Service): string => s.command![s.command!.indexOf('--role') + 1]!;
  assert.deepEqual(amebos.map(([, s]) => roleOf(s)).sort(), ['api,relay', 'api,relay', 'bridge', 'bridge']);
  const shared = new Set<string>();
  for (const [name, s] of amebos) {
    const env = s.environment ?? {};
    const nodes = amqpNodes(defaults(env.AMEBO_AMQP_URL ?? '')).map((u) => new URL(u).hostname);
    assert.deepEqual(nodes, ['rabbitmq1', 'rabbitmq2', 'rabbitmq3'], `${name}: AMEBO_AMQP_URL lists the three nodes`);
    assert.equal(env.AMEBO_QUEUE_TYPE ?? 'quorum', 'quorum', `${name}: quorum queues, replicated on the nodes`);
    for (const node of ['rabbitmq1', 'rabbitmq2', 'rabbitmq3', 'postgres', 'redis'])
      assert.equal(s.depends_on?.[node]?.condition, 'service_healthy', `${name} waits for ${node}`);
    assert.ok(s.healthcheck, `${name}: healthcheck`);
    shared.add(
      JSON.stringify([env.AMEBO_ADMIN_TOKEN, env.AMEBO_SECRET_KEY, env.AMEBO_DATABASE_URL, env.AMEBO_REDIS_URL]),
    );
  }
  assert.equal(shared.size, 1, 'one admin token, secret key, database and Redis for the four');
});

test('scripts/services.sh --cluster: three nodes, PostgreSQL and Redis on their own ports, never the shared ones', () => {
  const env = { ...process.env, AMEBO_SKIP_SERVICES: '0' };
  const urls = spawnSync('bash', ['scripts/cluster.sh', 'urls'], { cwd: root, env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(urls.status, 0, urls.stderr);
  const vars = Object.fromEntries(
    urls.stdout
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  const ports = amqpNodes(vars.AMEBO_AMQP_URL!).map((u) => new URL(u).port);
  assert.equal(new Set(ports).size, 3, 'three nodes');
  assert.ok(!ports.includes('5672'), `not the shared RabbitMQ: ${ports.join(',')}`);
  assert.notEqual(new URL(vars.AMEBO_DATABASE_URL!).port || '5432', '5432', 'not the shared PostgreSQL');
  assert.notEqual(new URL(vars.AMEBO_REDIS_URL!).port || '6379', '6379', 'not the shared Redis');
  // --cluster hands over to cluster.sh, alone (never mixed with the shared services' start).
  const mixed = spawnSync('bash', ['scripts/services.sh', '--cluster', '--extras'], {
    cwd: root,
    env,
    encoding: 'utf8',
  });
  assert.equal(mixed.status, 2);
  assert.match(mixed.stderr, /--cluster and --cluster-down go alone/);
  assert.match(
    readFileSync(new URL('../scripts/services.sh', import.meta.url), 'utf8'),
    /exec bash .*cluster\.sh" "\$cluster"/,
  );
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { TargetPolicy } from '../../src/targets.js';

// What is blocked by default and how each way of running Amebo allows it (issue "safe to expose"
// §1): production blocks every private target; `npm start` (local development) allows loopback
// and says so; docker-compose allows its receiver by name. Read from the files, nothing started.

const read = (file: string): string => readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8');

test('defaults: private targets blocked, nothing allowed', () => {
  const cfg = loadConfig({}, {});
  assert.equal(cfg.blockPrivateTargets, true);
  assert.equal(cfg.allowedTargets, '');
  const p = new TargetPolicy({ block: cfg.blockPrivateTargets, allowed: cfg.allowedTargets });
  for (const a of ['127.0.0.1', '::1', '10.0.0.1', '169.254.169.254'])
    assert.throws(() => p.check(a, 80, a), /address/, a);
  assert.throws(() => loadConfig({}, { AMEBO_BLOCK_PRIVATE_TARGETS: 'maybe' }), /true or false/);
});

test('npm start allows loopback only, says so on stderr, and leaves an explicit AMEBO_ALLOWED_TARGETS alone', () => {
  const script = read('scripts/start.sh');
  assert.match(read('package.json'), /"start": "bash scripts\/start\.sh"/);
  // The script's own allow-list block, run as written (the rest starts services and Amebo).
  const block = /^if \[ -z "\$\{AMEBO_ALLOWED_TARGETS\+x\}" \]; then\n[\s\S]*?^fi$/m.exec(script)?.[0];
  assert.ok(block, 'scripts/start.sh sets AMEBO_ALLOWED_TARGETS when unset');
  assert.ok(script.indexOf(block) < script.indexOf('exec node bin/amebo.js serve'), 'before serve starts');
  const run = (env: Record<string, string>) =>
    spawnSync(
      'bash',
      ['--norc', '--noprofile', '-c', `set -euo pipefail\n${block}\nprintf '%s' "\${AMEBO_ALLOWED_TARGETS-unset}"`],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
  const dflt = run({});
  assert.equal(dflt.status, 0, dflt.stderr);
  assert.match(dflt.stderr, /allows webhook targets on loopback/);
  const p = new TargetPolicy({ block: true, allowed: dflt.stdout });
  const loopback: [string, string][] = [
    ['127.0.0.1', '127.0.0.1'],
    ['127.0.0.2', '127.0.0.2'],
    ['::1', '::1'],
    ['localhost', '127.0.0.1'],
  ];
  for (const [host, address] of loopback) assert.ok(p.allows(host, 8080, address), `${host} allowed`);
  for (const a of ['10.0.0.1', '192.168.1.1', '169.254.169.254', 'fd00::1', '0.0.0.0'])
    assert.ok(!p.allows(a, 80, a), `${a} still blocked`);
  // An operator's own choice, even empty, is kept and nothing is said.
  for (const mine of ['', 'receiver:8080']) {
    const r = run({ AMEBO_ALLOWED_TARGETS: mine });
    assert.equal(r.stdout, mine);
    assert.equal(r.stderr, '');
  }
});

test('docker-compose blocks private targets and allows its receiver by host:port (overridable)', () => {
  for (const file of ['docker-compose.yml', 'docker-compose.cluster.yml']) {
    const doc = parse(read(file)) as Record<string, unknown>;
    const text = JSON.stringify(doc);
    assert.match(text, /"AMEBO_BLOCK_PRIVATE_TARGETS":"true"/, file);
    const allowed = /"AMEBO_ALLOWED_TARGETS":"\$\{AMEBO_ALLOWED_TARGETS:-([^}]*)\}"/.exec(text)?.[1];
    assert.equal(allowed, 'receiver:8080', file);
    const p = new TargetPolicy({ block: true, allowed: 'receiver:8080' });
    assert.ok(p.allows('receiver', 8080, '172.18.0.5'), `${file}: the receiver, whatever its address`);
    assert.ok(!p.allows('receiver', 8081, '172.18.0.5'), `${file}: only on its port`);
    assert.ok(!p.allows('postgres', 5432, '172.18.0.3'), `${file}: nothing else on the network`);
  }
});

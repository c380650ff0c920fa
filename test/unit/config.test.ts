import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig, parseAddress } from '../../src/config.js';
import { uuidv7, uuidv7Time, isUuid } from '../../src/ids.js';
import { hashSecret, SecretBox, verifySecret, newSigningSecret } from '../../src/secrets.js';

test('config reads env vars over defaults and overrides over env', () => {
  const cfg = loadConfig(
    { workers: 3 },
    { AMEBO_ADDRESS: '0.0.0.0:8701', AMEBO_WORKERS: '2', AMEBO_RETRY_SCHEDULE: '1, 2,3' },
  );
  assert.equal(cfg.address, '0.0.0.0:8701');
  assert.equal(cfg.workers, 3);
  assert.deepEqual(cfg.retrySchedule, [1, 2, 3]);
  assert.deepEqual([...cfg.roleSet].sort(), ['api', 'bridge', 'presence', 'relay']);
});

test('config rejects bad values with the variable named', () => {
  assert.throws(
    () => loadConfig({}, { AMEBO_WORKERS: 'two' }),
    (e: Error) => e instanceof ConfigError && e.message.includes('AMEBO_WORKERS'),
  );
  assert.throws(() => loadConfig({}, { AMEBO_QUEUE_TYPE: 'stream' }), ConfigError);
  assert.throws(() => loadConfig({}, { AMEBO_ROLES: 'api,oops' }), /unknown role "oops"/);
  assert.throws(() => loadConfig({}, { AMEBO_BLOCK_PRIVATE_TARGETS: 'maybe' }), ConfigError);
  assert.throws(() => loadConfig({}, { AMEBO_ADDRESS: 'nope' }), ConfigError);
  // One group commit is one INSERT with 9 parameters per event: PostgreSQL takes at most 65,535.
  assert.throws(() => loadConfig({}, { AMEBO_GROUP_COMMIT_MAX: '8000' }), /AMEBO_GROUP_COMMIT_MAX .*<= 7281/);
  assert.equal(loadConfig({}, { AMEBO_GROUP_COMMIT_MAX: '7281' }).groupCommitMax, 7281);
});

test('addresses parse with hosts, IPv6 and bare ports', () => {
  assert.deepEqual(parseAddress('0.0.0.0:8701'), { host: '0.0.0.0', port: 8701 });
  assert.deepEqual(parseAddress('[::1]:80'), { host: '::1', port: 80 });
  assert.deepEqual(parseAddress('8701'), { host: '127.0.0.1', port: 8701 });
  assert.throws(() => parseAddress('h:99999'), ConfigError);
});

test('uuidv7 ids are valid, sortable and carry their time', () => {
  const ids = Array.from({ length: 5000 }, () => uuidv7());
  assert.ok(ids.every(isUuid));
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(Math.abs(uuidv7Time(ids[0]!).getTime() - Date.now()) < 5000);
  assert.equal(ids[0]![14], '7');
});

test('secrets: scrypt hashes verify only the right secret; the box round-trips and detects tampering', async () => {
  const h = await hashSecret('user-service-secret');
  assert.ok(h.startsWith('scrypt$'));
  assert.equal(await verifySecret('user-service-secret', h), true);
  assert.equal(await verifySecret('user-service-secreT', h), false);
  const box = new SecretBox('k'.repeat(32));
  const s = newSigningSecret();
  assert.match(s, /^whsec_[A-Za-z0-9+/=]{32}$/);
  const sealed = box.seal(s);
  assert.notEqual(sealed, s);
  assert.equal(box.open(sealed), s);
  assert.throws(() => new SecretBox('other key 123456').open(sealed));
});

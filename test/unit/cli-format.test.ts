import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stripVTControlCharacters } from 'node:util';
import { describeStreamMessage } from '../../src/cli/ops-commands.js';

const line = (m: Record<string, unknown>) => stripVTControlCharacters(describeStreamMessage(m) ?? '');

test('monitor lines: events, delivery outcomes and service changes, one line each', () => {
  assert.match(
    line({ type: 'event', event: { id: 'e1', action: 'user.created', payload: { email: 'a@b.c' } } }),
    /event +user\.created e1 \{"email":"a@b\.c"\}$/,
  );
  assert.match(
    line({
      type: 'delivery',
      event: 'e1',
      application: 'mail',
      subscription_name: 'welcome',
      state: 'retrying',
      attempt: 2,
      status: 503,
      error: 'http_503',
    }),
    /delivery mail\/welcome e1 retrying attempt 2 → 503 \(http_503\)$/,
  );
  assert.match(
    line({ type: 'service', fqn: 'shop.pricing.p1', status: 'down', previous: 'up', version: '1.2.0' }),
    /service +shop\.pricing\.p1 down \(was up\) v1\.2\.0$/,
  );
  assert.equal(describeStreamMessage({ type: 'hello' }), null);
  const long = line({ type: 'event', event: { id: 'e2', action: 'x', payload: 'y'.repeat(500) } });
  assert.ok(long.length < 200 && long.endsWith('…'), long);
});

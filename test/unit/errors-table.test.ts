import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { withTable } from '../../scripts/errors-table.js';
import { ERRORS } from '../../src/errors.js';

test("the README's error table is the registry's (npm run docs:errors regenerates it)", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  assert.equal(readme, withTable(readme), 'README.md error table is stale: run npm run docs:errors');
  for (const [name, e] of Object.entries(ERRORS)) assert.ok(readme.includes(`| \`AMEBO_ERR_${name}\` | ${e.status} |`));
});

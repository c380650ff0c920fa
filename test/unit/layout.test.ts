import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';

/**
 * The import rules of design §11, checked on the source: the published entries (`amebo/sdk`,
 * `amebo/fabric`) reach nothing server-only, the bridge does not import the API, the API does
 * not import the bridge, configuration is read in one place and SQL lives in the store.
 */
const root = path.resolve(import.meta.dirname, '../..');

function files(dir: string): string[] {
  return readdirSync(path.join(root, dir), { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile() && d.name.endsWith('.ts'))
    .map((d) => path.relative(root, path.join(d.parentPath, d.name)));
}

/** Relative imports (static and dynamic) of one file, resolved to repository paths. */
function importsOf(file: string): string[] {
  const src = readFileSync(path.join(root, file), 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
    const spec = m[1]!.replace(/\.js$/, '.ts');
    out.push(path.relative(root, path.resolve(path.dirname(path.join(root, file)), spec)));
  }
  return out;
}

function closure(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f) || !existsSync(path.join(root, f))) continue;
    seen.add(f);
    todo.push(...importsOf(f));
  }
  return seen;
}

const serverOnly = (f: string) =>
  f.startsWith('bridge/') ||
  f.startsWith('src/api/') ||
  f.startsWith('src/store/') ||
  f.startsWith('src/operations/') ||
  f === 'src/registry.ts' ||
  f === 'src/app.ts';

test('the published entries amebo/sdk and amebo/fabric reach nothing server-only', () => {
  for (const entry of ['src/sdk/index.ts', 'src/fabric/index.ts']) {
    const reached = closure(entry);
    assert.ok(reached.size > 3, `${entry} resolves its imports (${reached.size} files)`);
    assert.deepEqual([...reached].filter(serverOnly), [], `${entry} reaches server-only code`);
  }
});

test('no import from src/api/ in bridge/, none from bridge/ in src/ outside the composition roots', () => {
  const bad: string[] = [];
  for (const f of files('bridge')) for (const i of importsOf(f)) if (i.startsWith('src/api/')) bad.push(`${f} -> ${i}`);
  const composers = new Set(['src/plugins.ts', 'src/index.ts', 'src/cli.ts']);
  for (const f of files('src'))
    if (!composers.has(f)) for (const i of importsOf(f)) if (i.startsWith('bridge/')) bad.push(`${f} -> ${i}`);
  assert.deepEqual(bad, []);
});

test('process.env is read only in src/config.ts', () => {
  const bad = [...files('src'), ...files('bridge')].filter(
    (f) => f !== 'src/config.ts' && /process\.env\b/.test(readFileSync(path.join(root, f), 'utf8')),
  );
  assert.deepEqual(bad, []);
});

test('SQL statements live in src/store/', () => {
  const sql = /`[^`]*\b(SELECT\s[\s\S]*?\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b/;
  const bad = [...files('src'), ...files('bridge')].filter(
    (f) => !f.startsWith('src/store/') && sql.test(readFileSync(path.join(root, f), 'utf8')),
  );
  assert.deepEqual(bad, []);
  // The check can fail: the store itself matches.
  assert.ok(files('src/store').some((f) => sql.test(readFileSync(path.join(root, f), 'utf8'))));
});

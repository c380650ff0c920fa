/** Child processes for tests: `node <argv>` with extra environment, killed after `timeoutMs`. */
import { spawn } from 'node:child_process';

const BIN = new URL('../../bin/amebo.js', import.meta.url).pathname;

export function runNode(argv: string[], env: Record<string, string>, timeoutMs = 30_000) {
  const child = spawn(process.execPath, argv, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    }),
  );
  return { child, done, out: () => stdout, err: () => stderr };
}

/** `bin/amebo.js <args>`. */
export const runCli = (args: string[], env: Record<string, string>, timeoutMs = 30_000) =>
  runNode([BIN, ...args], env, timeoutMs);

/**
 * The schema compiler's worker thread (see schema-compiler.ts): compiles one schema at a time to a
 * validator's source, off the event loop. Its answers: `{ id, code }`, or `{ id, error }` with the
 * SCHEMA_INVALID message and details `compileSchema` gave.
 */
import { parentPort } from 'node:worker_threads';
import { AmeboError } from './errors.js';
import { validatorSource } from './schema.js';

export interface CompileJob {
  id: number;
  schema: Record<string, unknown>;
}

export type CompileAnswer =
  | { ready: true }
  | { id: number; code: string }
  | { id: number; error: { message: string; details?: unknown; invalid: boolean } };

parentPort!.on('message', (job: CompileJob) => {
  let answer: CompileAnswer;
  try {
    answer = { id: job.id, code: validatorSource(job.schema) };
  } catch (err) {
    const e = err as Error;
    answer = {
      id: job.id,
      error: {
        message: e.message,
        details: err instanceof AmeboError ? err.details : undefined,
        invalid: err instanceof AmeboError,
      },
    };
  }
  parentPort!.postMessage(answer);
});
// Loaded: the compiler starts a job's deadline from here, not from the thread's start.
parentPort!.postMessage({ ready: true });

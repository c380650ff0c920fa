import { Worker } from 'node:worker_threads';
import type { ValidateFunction } from 'ajv';
import { AmeboError } from './errors.js';
import type { Logger } from './log.js';
import { loadValidator } from './schema.js';
import type { CompileAnswer, CompileJob } from './schema-worker.js';

export interface SchemaCompilerOptions {
  /** Longest one compile may take in the worker before the schema is refused. */
  timeoutMs: number;
  /** Largest validator source accepted (what the event loop parses and compiles once per version). */
  maxCodeBytes: number;
  /** Compiles waiting at most; more are refused with a 429. @default 64 */
  maxQueue?: number;
  /** Heap of the worker thread, MB: a schema that needs more is refused. @default 512 */
  heapMb?: number;
  logger?: Logger;
}

/** Longest a worker may take to load its modules. */
const STARTUP_MS = 30_000;

interface Job {
  id: number;
  schema: Record<string, unknown>;
  /** A stored schema (a publish's cache miss): queued ahead of new ones. */
  stored: boolean;
  resolve: (v: ValidateFunction) => void;
  reject: (e: unknown) => void;
}

/**
 * Compiles action schemas on a worker thread. ajv's compile runs in the thread that calls it and
 * some schemas inside AMEBO_MAX_SCHEMA_BYTES take seconds (measured: 1.7 s for 256 KB of plain
 * properties, 13 s for 250 KB of properties with patterns, where ajv's code generation is
 * quadratic): on the event loop, one registration froze every publish of every tenant that long.
 *
 * Here the worker compiles to a validator's source (ajv's standalone code), one schema at a time,
 * under a deadline and a heap limit; on the event loop only that source is instantiated, and only
 * when it is at most `maxCodeBytes` (loading it and V8's compile at its first call cost ~0.13 ms
 * per KB here: 2.3 + 6.6 ms for 92 KB, 44 + 80 ms for 935 KB).
 * A compile past the deadline ends the worker (a new one takes the next job) and the schema is
 * refused with 422 SCHEMA_INVALID saying why. Jobs of stored schemas (a publish's cache miss) go
 * before new ones (a registration), so registrations cannot starve publishing.
 */
export class SchemaCompiler {
  private readonly o: Required<Omit<SchemaCompilerOptions, 'logger'>> & { logger?: Logger };
  private worker: Worker | null = null;
  private readonly queue: Job[] = [];
  private current: Job | null = null;
  private timer: NodeJS.Timeout | undefined;
  private nextId = 1;
  /** The worker has loaded its modules; `startJob` starts the deadline of a job posted before. */
  private ready = false;
  private startJob: (() => void) | null = null;
  private closed = false;
  /** Callers of `warm()` waiting for the worker to load (or to fail to). */
  private warming: (() => void)[] = [];

  constructor(opts: SchemaCompilerOptions) {
    this.o = { maxQueue: 64, heapMb: 512, ...opts };
  }

  /**
   * Starts the worker ahead of the first compile: a process with the API role calls it at start, so
   * the first publish of each action after a restart does not also wait for the worker to load its
   * modules (~0.6 s under tsx). Resolves once the worker is ready, or has failed to start (the next
   * compile starts another); never rejects.
   */
  warm(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.ensureWorker();
    if (this.ready) return Promise.resolve();
    return new Promise((resolve) => this.warming.push(resolve));
  }

  /** The worker is up and has loaded its modules. */
  get warmed(): boolean {
    return this.worker !== null && this.ready;
  }

  private wakeWarming(): void {
    for (const r of this.warming.splice(0)) r();
  }

  /**
   * The validator of `schema`, or a 422 SCHEMA_INVALID (invalid, too slow to compile, too large a
   * validator), or a 429 when `maxQueue` compiles wait already. `stored`: a schema already accepted
   * (compiled for a publish), served before new ones.
   */
  compile(schema: Record<string, unknown>, stored = false): Promise<ValidateFunction> {
    if (this.closed) return Promise.reject(new Error('schema compiler is closed'));
    if (this.queue.length >= this.o.maxQueue && !stored)
      return Promise.reject(
        new AmeboError('RATE_LIMITED', `${this.queue.length} schemas wait to be compiled; retry shortly`, undefined, {
          'retry-after': '1',
        }),
      );
    return new Promise((resolve, reject) => {
      const job = { id: this.nextId++, schema, stored, resolve, reject };
      const firstNew = stored ? this.queue.findIndex((j) => !j.stored) : -1;
      this.queue.splice(firstNew < 0 ? this.queue.length : firstNew, 0, job);
      this.pump();
    });
  }

  /** Jobs waiting or running (for tests and metrics). */
  get pending(): number {
    return this.queue.length + (this.current ? 1 : 0);
  }

  private pump(): void {
    if (this.current || this.closed) return;
    const job = this.queue.shift();
    if (!job) return;
    this.current = job;
    const worker = this.ensureWorker();
    // A stored schema was accepted once: it gets three times the deadline, so that a busy machine
    // does not turn an accepted action's publishes into refusals.
    const timeoutMs = job.stored ? 3 * this.o.timeoutMs : this.o.timeoutMs;
    const expire = (): void => {
      this.o.logger?.warn({ timeoutMs }, 'schema compile took too long; worker restarted');
      this.finish(
        job,
        new AmeboError(
          'SCHEMA_INVALID',
          `the schema takes longer than ${timeoutMs} ms to compile (AMEBO_SCHEMA_COMPILE_MS); make it smaller or ` +
            'simpler (fewer properties with pattern or format)',
        ),
      );
      this.dropWorker(worker);
    };
    // The deadline counts from when the worker has loaded (starting one takes a few hundred ms).
    if (this.ready) this.timer = setTimeout(expire, timeoutMs);
    else {
      this.startJob = () => (this.timer = setTimeout(expire, timeoutMs));
      this.timer = setTimeout(() => {
        this.finish(job, new Error(`the schema compiler's worker did not start within ${STARTUP_MS} ms`));
        this.dropWorker(worker);
      }, STARTUP_MS);
    }
    worker.postMessage({ id: job.id, schema: job.schema } satisfies CompileJob);
  }

  private finish(job: Job, err: unknown, code?: string): void {
    if (this.current !== job) return;
    clearTimeout(this.timer);
    this.startJob = null;
    this.current = null;
    if (err) job.reject(err);
    else {
      try {
        const bytes = Buffer.byteLength(code!);
        if (bytes > this.o.maxCodeBytes)
          throw new AmeboError(
            'SCHEMA_INVALID',
            `the schema compiles to a ${bytes}-byte validator, more than ${this.o.maxCodeBytes} ` +
              '(AMEBO_MAX_VALIDATOR_BYTES); make it smaller or simpler',
          );
        job.resolve(loadValidator(code!));
      } catch (e) {
        job.reject(e);
      }
    }
    setImmediate(() => this.pump());
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    this.ready = false;
    this.startJob = null;
    const ts = import.meta.url.endsWith('.ts');
    const entry = new URL(`./schema-worker.${ts ? 'ts' : 'js'}`, import.meta.url).href;
    // Under tsx (the sources run as TypeScript) the worker registers tsx before importing its entry.
    const w = ts
      ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`, {
          eval: true,
          resourceLimits: { maxOldGenerationSizeMb: this.o.heapMb },
        })
      : new Worker(new URL(entry), { resourceLimits: { maxOldGenerationSizeMb: this.o.heapMb } });
    w.unref();
    w.on('message', (a: CompileAnswer) => {
      if ('ready' in a) {
        if (this.worker !== w) return;
        this.ready = true;
        this.wakeWarming();
        const start = this.startJob;
        this.startJob = null;
        if (start) {
          clearTimeout(this.timer);
          start();
        }
        return;
      }
      const job = this.current;
      if (!job || a.id !== job.id) return;
      if ('code' in a) this.finish(job, null, a.code);
      else
        this.finish(
          job,
          a.error.invalid
            ? new AmeboError('SCHEMA_INVALID', a.error.message, a.error.details)
            : new AmeboError('SCHEMA_INVALID', `schema does not compile: ${a.error.message.slice(0, 400)}`),
        );
    });
    // A worker that dies fails its job; the next job starts another. Out of memory is the schema's
    // doing (a 422); anything else is Amebo's (a 500 with the cause in the log).
    const gone = (err: Error | number): void => {
      if (this.worker === w) this.worker = null;
      this.wakeWarming();
      const job = this.current;
      if (!job) return;
      const oom = err instanceof Error && (err as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY';
      this.o.logger?.warn({ err: err instanceof Error ? err.message : `exit ${err}` }, 'schema compiler worker ended');
      this.finish(
        job,
        oom
          ? new AmeboError(
              'SCHEMA_INVALID',
              `compiling the schema needs more than ${this.o.heapMb} MB; make it smaller or simpler`,
            )
          : new Error(`the schema compiler's worker stopped: ${err instanceof Error ? err.message : `exit ${err}`}`),
      );
    };
    w.on('error', gone);
    w.on('exit', gone);
    this.worker = w;
    return w;
  }

  private dropWorker(w: Worker): void {
    if (this.worker === w) {
      this.worker = null;
      this.startJob = null;
    }
    w.removeAllListeners('exit');
    w.removeAllListeners('error');
    w.on('error', () => undefined);
    void w.terminate();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const err = new Error('schema compiler is closed');
    for (const j of this.queue.splice(0)) j.reject(err);
    this.wakeWarming();
    if (this.current) {
      this.current.reject(err);
      this.current = null;
    }
    if (this.worker) {
      const w = this.worker;
      this.worker = null;
      w.removeAllListeners();
      w.on('error', () => undefined);
      await w.terminate();
    }
  }
}

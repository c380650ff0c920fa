/**
 * One recovering AMQP connection, shared by Amebo's roles (`Broker`) and the fabric SDK (`Link` in
 * `src/fabric/link.ts`). amqplib's opt-in recovery restores the socket only: channels, consumers,
 * prefetch and declarations die with it. So every component registers a setup hook that rebuilds
 * what it owns on a given connection; hooks run inside amqplib's `setup()` on every (re)connect,
 * in registration order, before the connection is announced, so nothing sees a half-built one.
 */
import { EventEmitter } from 'node:events';
import amqp, { type Channel, type ChannelModel, type RecoveringChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { redactUrl } from '../log.js';

export { redactUrl };

export type SetupHook = (model: ChannelModel) => Promise<void>;

export interface ConnectionOptions {
  url: string;
  /** Shown as `connection_name` in `rabbitmqctl list_connections client_properties`. */
  name: string;
  logger: Logger;
  /** AMQP heartbeat, seconds (unless the URL sets one). @default 10 */
  heartbeatSeconds?: number;
  /** @default 100 */
  reconnectInitialDelayMs?: number;
  /** @default 5000 */
  reconnectMaxDelayMs?: number;
  /** Prefix of this connection's log messages. @default 'amqp' */
  logPrefix?: string;
  /** The error `open()` throws when no connection came within its timeout. */
  unreachable?: (url: string, timeoutMs: number, lastFailure: string) => Error;
  /** The error thrown by operations that need a live connection while there is none. */
  unavailable?: (message: string) => Error;
}

interface HookEntry {
  fn: SetupHook;
  /** The connection this hook last ran on; a hook added during a setup may have missed it. */
  ranOn: ChannelModel | null;
  waiters: Array<{ resolve: () => void; reject: (err: unknown) => void }>;
}

export class RecoveringConnection extends EventEmitter {
  protected readonly opts: ConnectionOptions;
  protected readonly log: Logger;
  private conn: RecoveringChannelModel | null = null;
  private live: ChannelModel | null = null;
  private readonly hooks: HookEntry[] = [];
  private closed = false;

  constructor(opts: ConnectionOptions) {
    super();
    this.opts = opts;
    this.log = opts.logger;
  }

  get connected(): boolean {
    return this.live !== null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The live connection, or null while (re)connecting. */
  get model(): ChannelModel | null {
    return this.live;
  }

  private unavailable(message: string): Error {
    return this.opts.unavailable?.(message) ?? new Error(message);
  }

  /** Connects, waiting at most `timeoutMs` for the first connection; recovery goes on forever after. */
  async open(timeoutMs = 10_000): Promise<void> {
    const p = this.opts.logPrefix ?? 'amqp';
    const url = new URL(this.opts.url);
    if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', String(this.opts.heartbeatSeconds ?? 10));
    const conn = await amqp.connect(url.toString(), {
      noDelay: true,
      timeout: Math.min(timeoutMs, 10_000),
      clientProperties: { connection_name: this.opts.name },
      recovery: {
        waitForConnect: false,
        initialDelay: this.opts.reconnectInitialDelayMs ?? 100,
        maxDelay: this.opts.reconnectMaxDelayMs ?? 5000,
        maxRetries: Infinity,
        setup: (model: ChannelModel) => this.setup(model),
      },
    });
    this.conn = conn;
    conn.on('connect', (model: ChannelModel) => {
      this.live = model;
      this.log.debug(`${p}: connected`);
      this.emit('connect', model);
      void this.catchUp(model);
    });
    conn.on('disconnect', (err: Error) => {
      this.live = null;
      if (!this.closed) this.log.warn({ err: err.message }, `${p}: broker connection lost; reconnecting`);
      this.emit('disconnect', err);
    });
    let lastFailure = '';
    conn.on('connect-failed', (err: Error) => {
      lastFailure = err.message;
      this.log.debug({ err: err.message }, `${p}: connect attempt failed`);
    });
    conn.on('error', (err: Error) => this.log.debug({ err: err.message }, `${p}: connection error`));
    conn.on('blocked', (reason: string) => this.log.warn({ reason }, `${p}: connection blocked by the broker`));
    conn.on('handler-error', (err: Error, event: string) => this.log.error({ err, event }, `${p}: listener threw`));
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        conn.waitForConnect(),
        new Promise((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                this.opts.unreachable?.(this.opts.url, timeoutMs, lastFailure) ??
                  new Error(`broker unreachable at ${redactUrl(this.opts.url)} after ${timeoutMs} ms`),
              ),
            timeoutMs,
          );
        }),
      ]);
    } catch (err) {
      this.closed = true;
      await conn.close().catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private async setup(model: ChannelModel): Promise<void> {
    model.on('error', (err: Error) => this.log.debug({ err: err.message }, 'amqp connection error'));
    coalesceWrites(model);
    // Index loop on purpose: hooks added while this runs are picked up.
    for (let i = 0; i < this.hooks.length; i++) {
      const h = this.hooks[i]!;
      try {
        await h.fn(model);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'setup after (re)connect failed; retrying the connection');
        throw err;
      }
      h.ranOn = model;
    }
  }

  /** Runs hooks that were added after the setup loop had passed them, and releases their waiters. */
  private async catchUp(model: ChannelModel): Promise<void> {
    for (const h of [...this.hooks]) {
      if (h.ranOn !== model) {
        try {
          await h.fn(model);
          h.ranOn = model;
        } catch (err) {
          this.removeEntry(h);
          for (const w of h.waiters.splice(0)) w.reject(err);
          continue;
        }
      }
      for (const w of h.waiters.splice(0)) w.resolve();
    }
  }

  /**
   * Registers a setup hook and runs it on the live connection. Resolves once it ran; if that first
   * run fails the hook is dropped and the error is the caller's. While disconnected it waits for
   * the next connection, unless `wait` is false: then the hook is registered and runs on connect.
   */
  async addSetup(fn: SetupHook, opts: { wait?: boolean } = {}): Promise<void> {
    if (this.closed) throw this.unavailable('connection is closed');
    const entry: HookEntry = { fn, ranOn: null, waiters: [] };
    this.hooks.push(entry);
    const model = this.live;
    if (model) {
      try {
        await fn(model);
        entry.ranOn = model;
      } catch (err) {
        this.removeEntry(entry);
        throw err;
      }
      return;
    }
    if (opts.wait === false) return;
    await new Promise<void>((resolve, reject) => entry.waiters.push({ resolve, reject }));
  }

  /**
   * Runs a registered hook again on the live connection, after `delayMs`, while `needed()` says so:
   * for a component whose channel closed on a channel-level error (a deleted exchange or queue)
   * while the connection lives on, so no reconnect will run its hook. Retries with backoff until it
   * succeeds; stops when the hook is removed or the connection closes. A lost connection is left to
   * the recovery, which runs every hook anyway.
   */
  rerun(fn: SetupHook, needed: () => boolean = () => true, delayMs = 200): void {
    setTimeout(() => {
      const entry = this.hooks.find((h) => h.fn === fn);
      const model = this.live;
      if (!entry || !model || this.closed || !needed()) return;
      fn(model).then(
        () => void (entry.ranOn = model),
        (err: Error) => {
          this.log.debug({ err: err.message }, 'setup hook failed on the live connection; retrying');
          this.rerun(fn, needed, Math.min(delayMs * 2, 5000));
        },
      );
    }, delayMs).unref();
  }

  removeSetup(fn: SetupHook): void {
    const e = this.hooks.find((h) => h.fn === fn);
    if (e) this.removeEntry(e);
  }

  private removeEntry(e: HookEntry): void {
    const i = this.hooks.indexOf(e);
    if (i >= 0) this.hooks.splice(i, 1);
  }

  /** Waits until connected, at most `timeoutMs`; false on timeout or close. */
  async waitConnected(timeoutMs: number): Promise<boolean> {
    if (this.live) return true;
    if (this.closed || timeoutMs <= 0) return false;
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(t);
        this.off('connect', onConnect);
        this.off('closed', onClose);
        resolve(ok);
      };
      const onConnect = (): void => done(true);
      const onClose = (): void => done(false);
      const t = setTimeout(() => done(false), timeoutMs);
      this.once('connect', onConnect);
      this.once('closed', onClose);
    });
  }

  /** A short-lived channel for operations that may close it with an error (passive declares). */
  async withThrowawayChannel<T>(fn: (ch: Channel) => Promise<T>): Promise<T> {
    const model = this.live;
    if (!model) throw this.unavailable('broker not connected');
    const ch = await model.createChannel();
    let dead = false;
    ch.on('error', () => undefined);
    ch.on('close', () => (dead = true));
    try {
      return await fn(ch);
    } finally {
      if (!dead) await ch.close().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.emit('closed');
    const conn = this.conn;
    this.conn = null;
    this.live = null;
    for (const h of this.hooks.splice(0))
      for (const w of h.waiters.splice(0)) w.reject(this.unavailable('connection closed'));
    if (conn) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([conn.close().catch(() => undefined), new Promise((r) => (t = setTimeout(r, 3000)))]);
      clearTimeout(t);
    }
  }
}

/**
 * amqplib's muxer writes each frame group to the socket separately, one syscall each (loopback TCP
 * writes are costly: profiles of the publish path and of an RPC call are dominated by them).
 * Corking the socket around one muxer pass sends everything queued in that pass (publishes of a
 * group commit, replies, acks, calls of concurrent callers) in one writev. Reaches into amqplib
 * internals, so it only applies when they look as expected.
 */
function coalesceWrites(model: ChannelModel): void {
  const conn = (
    model as unknown as {
      connection?: { muxer?: { _readIncoming?: () => void }; stream?: { cork?: () => void; uncork?: () => void } };
    }
  ).connection;
  const mux = conn?.muxer;
  const sock = conn?.stream;
  if (
    !mux ||
    typeof mux._readIncoming !== 'function' ||
    typeof sock?.cork !== 'function' ||
    typeof sock.uncork !== 'function'
  )
    return;
  const pass = mux._readIncoming.bind(mux);
  const cork = sock.cork.bind(sock);
  const uncork = sock.uncork.bind(sock);
  mux._readIncoming = () => {
    cork();
    try {
      pass();
    } finally {
      uncork();
    }
  };
}

/**
 * One recovering AMQP connection, shared by Amebo's roles (`Broker`) and the fabric SDK (`Link` in
 * `src/fabric/link.ts`), and the one recovery model every AMQP user of Amebo goes through.
 *
 * The connection: `url` may list several nodes of a cluster, comma-separated. It connects to a
 * reachable one; when that connection dies it tries the nodes in turn (the one after the lost node
 * first), with exponential backoff and jitter once every node has failed, forever, logging each
 * failure at warn with the node it tried. amqplib's own recovery is not used: it retries one URL.
 *
 * What runs on it: channels, consumers, prefetch and declarations die with a connection, so every
 * component registers a setup hook that rebuilds what it owns (most through `ManagedChannel`, which
 * also rebuilds after a channel-level close or a consumer cancel while the connection lives).
 * Hooks run on every (re)connect, in registration order, before the connection is announced, so
 * nothing sees a half-built one. A failing hook fails the connection (closed, tried again), except
 * a managed channel's: its failure is its own, as on a live connection (that channel alone is
 * retried with backoff and reports `failed`; the connection and the other channels come up).
 *
 * Events: see `ConnectionEvents` (the connection) and `ManagedChannelEvents` (a channel on it).
 */
import { EventEmitter } from 'node:events';
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type Options } from 'amqplib';
import type { Logger } from 'pino';
import { redactUrl } from '../log.js';

export { redactUrl };

export type SetupHook = (model: ChannelModel) => Promise<void>;

export interface ConnectionOptions {
  /** One AMQP URL, or several (the nodes of a cluster) separated by commas. */
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
  /** Told of the connection's and its managed channels' state (Amebo's processes feed `/metrics` from it). */
  observer?: ConnectionObserver;
}

/**
 * What an observer of a connection is told (Amebo's `metricsObserver` in `src/broker/connection.ts`
 * turns it into `amebo_amqp_connected`, `amebo_amqp_connect_failures_total` and
 * `amebo_amqp_channels_ready`).
 */
export interface ConnectionObserver {
  /** Connected and set up (true), or not (false: at start, after a loss, after `close()`). */
  connected(up: boolean): void;
  /** An attempt to connect to `node` (credentials redacted) failed. */
  failed(node: string): void;
  /** A managed channel of this connection is up, down (opened but not built yet, or being rebuilt), or closed for good. */
  channel(name: string, state: 'ready' | 'down' | 'closed'): void;
}

interface HookEntry {
  fn: SetupHook;
  /** The connection this hook last ran on; a hook added during a setup may have missed it. */
  ranOn: ChannelModel | null;
  /** The connection whose setup this hook failed on (isolated hooks only: retried on their own). */
  failedOn: ChannelModel | null;
  /** Set for a hook whose failure at (re)connect is its own (a managed channel's), not the connection's. */
  isolated?: IsolatedHook;
  waiters: Array<{ resolve: () => void; reject: (err: unknown) => void }>;
}

/** A failed build of an isolated hook (a managed channel), as its owner is told of it. */
export interface HookFailure {
  /** Failed builds in a row (1, 2...). */
  attempt: number;
  /** Wait before the next try. */
  delayMs: number;
  /** The node of the connection it failed on (credentials redacted). */
  node: string | null;
  error: Error;
}

/**
 * A hook that owns what it builds (a managed channel): when it fails at (re)connect, the connection
 * still comes up and the hook alone is retried with backoff (`rerun`), as after a channel-level close.
 */
export interface IsolatedHook {
  /** Names it in logs ('channel "publisher"'). */
  what: string;
  /** Whether a retry is still needed (false once built by other means, or closed). */
  needed: () => boolean;
  /** Told of each failed build (at connect or in a retry). */
  failed?: (f: HookFailure) => void;
}

/** The nodes of a comma-separated AMQP URL list; each gets the heartbeat unless it sets one. */
export function amqpNodes(spec: string, heartbeatSeconds = 10): string[] {
  const nodes = spec
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  if (!nodes.length) throw new Error('no AMQP URL given');
  return nodes.map((u) => {
    const url = new URL(u);
    if (!/^amqps?:$/.test(url.protocol)) throw new Error(`${redactUrl(u)} is not an amqp:// or amqps:// URL`);
    if (!url.searchParams.has('heartbeat')) url.searchParams.set('heartbeat', String(heartbeatSeconds));
    return url.toString();
  });
}

/** A sleep another party can cut short (a loop's wait between rounds, ended by close or a kick). */
export class Pause {
  private waking: (() => void) | null = null;

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.waking = () => {
        this.waking = null;
        done();
      };
    });
  }

  /** Ends the current sleep now (nothing when none). */
  wake(): void {
    this.waking?.();
  }
}

/** Exponential backoff with full jitter between half and all of the step. */
export function backoffMs(attempt: number, initialMs: number, maxMs: number): number {
  const step = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
  return Math.round(step / 2 + (Math.random() * step) / 2);
}

/** A failed connection attempt, as `reconnecting` reports it. */
export interface ReconnectAttempt {
  /** The node tried (credentials redacted). */
  node: string;
  /** Failed attempts since the last connection (1, 2...). */
  attempt: number;
  /** Wait before the next attempt (0: the next node is tried at once). */
  delayMs: number;
  error: Error;
}

/** What a `RecoveringConnection` (so `Broker` and the fabric's `Link`) reports. */
export interface ConnectionEvents {
  /**
   * A connection is up and every setup hook ran on it: the first one and after each recovery
   * (`connects` says which). Nothing sees a half-built connection.
   */
  connect: [ChannelModel];
  /** Emitted right after `connect`, with the same connection (what readiness gauges listen to). */
  ready: [ChannelModel];
  /** The live connection was lost (not after `close()`); recovery starts at once. */
  disconnect: [Error];
  /** A connection attempt (or the setup on it) failed; the next one follows after `delayMs`. */
  reconnecting: [ReconnectAttempt];
  /** The same failure as `reconnecting`, emitted only while someone listens (never unhandled). */
  error: [Error];
  /** `close()` was called: no more connections, waiters released. Emitted once. */
  closed: [];
}

export class RecoveringConnection extends EventEmitter<ConnectionEvents> {
  protected readonly opts: ConnectionOptions;
  protected readonly log: Logger;
  private readonly nodes: string[];
  /** Index of the node to try next (or of the live one). */
  private nodeIndex = 0;
  private live: ChannelModel | null = null;
  private readonly hooks: HookEntry[] = [];
  private closed = false;
  private started = false;
  private readonly pause = new Pause();
  private lastFailure = '';
  /** The connection being set up (its hooks running), not yet live. */
  private settingUp: ChannelModel | null = null;
  /** Connections made, first included. */
  connects = 0;

  constructor(opts: ConnectionOptions) {
    super();
    this.opts = opts;
    this.log = opts.logger;
    this.nodes = amqpNodes(opts.url, opts.heartbeatSeconds ?? 10);
    const o = opts.observer;
    if (o) {
      o.connected(false);
      this.on('ready', () => o.connected(true));
      this.on('disconnect', () => o.connected(false));
      this.on('closed', () => o.connected(false));
      this.on('reconnecting', (r) => o.failed(r.node));
    }
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

  get logger(): Logger {
    return this.log;
  }

  /** The node of the live connection (credentials redacted), or null. */
  get node(): string | null {
    return this.live ? redactUrl(this.nodes[this.nodeIndex]!) : null;
  }

  private unavailable(message: string): Error {
    return this.opts.unavailable?.(message) ?? new Error(message);
  }

  /** Connects, waiting at most `timeoutMs` for the first connection; recovery goes on forever after. */
  async open(timeoutMs = 10_000): Promise<void> {
    if (this.started) throw new Error('open() was already called');
    this.started = true;
    const t0 = performance.now();
    const first = this.waitConnected(timeoutMs);
    void this.run(Math.min(timeoutMs, 10_000));
    if (await first) return;
    // Timers may fire a hair early: give up only once the whole timeout has passed.
    const left = timeoutMs - (performance.now() - t0);
    if (left > 0) await new Promise((r) => setTimeout(r, Math.ceil(left)));
    if (this.live) return;
    const err =
      this.opts.unreachable?.(this.opts.url, timeoutMs, this.lastFailure) ??
      new Error(`broker unreachable at ${redactUrl(this.opts.url)} after ${timeoutMs} ms`);
    await this.close();
    throw err;
  }

  /** The connection loop: connect, set up, wait for the loss, move on; until close(). */
  private async run(connectTimeoutMs: number): Promise<void> {
    const p = this.opts.logPrefix ?? 'amqp';
    const initial = this.opts.reconnectInitialDelayMs ?? 100;
    const max = this.opts.reconnectMaxDelayMs ?? 5000;
    let failures = 0;
    while (!this.closed) {
      const url = this.nodes[this.nodeIndex]!;
      let model: ChannelModel | null = null;
      try {
        model = await amqp.connect(url, {
          noDelay: true,
          timeout: connectTimeoutMs,
          clientProperties: { connection_name: this.opts.name },
        });
        const lost = new Promise<Error>((resolve) => {
          model!.once('close', (err?: Error) => resolve(err ?? new Error('connection closed')));
        });
        model.on('error', (err: Error) => this.log.debug({ err: err.message }, `${p}: connection error`));
        model.on('blocked', (reason: string) => this.log.warn({ reason }, `${p}: connection blocked by the broker`));
        model.on('unblocked', () => this.log.info(`${p}: connection unblocked`));
        if (this.closed) {
          await closeQuietly(model);
          break;
        }
        await this.setup(model, redactUrl(url));
        if (this.closed) {
          await closeQuietly(model);
          break;
        }
        this.live = model;
        this.connects++;
        const node = redactUrl(url);
        if (failures > 0 || this.connects > 1)
          this.log.warn({ node, after: failures }, `${p}: connected to ${node} (recovered)`);
        else this.log.debug({ node }, `${p}: connected to ${node}`);
        failures = 0;
        this.emit('connect', model);
        this.emit('ready', model);
        void this.catchUp(model);
        const err = await lost;
        this.live = null;
        model = null;
        if (this.closed) break;
        this.log.warn({ node, err: err.message }, `${p}: connection to ${node} lost; reconnecting`);
        this.emit('disconnect', err);
        // A lost node is most likely gone: the next attempt goes to the next one, at once.
        if (this.nodes.length > 1) this.nodeIndex = (this.nodeIndex + 1) % this.nodes.length;
        continue;
      } catch (err) {
        const e = err as Error;
        if (model) await closeQuietly(model);
        if (this.closed) break;
        this.lastFailure = e.message;
        failures++;
        const node = redactUrl(url);
        this.nodeIndex = (this.nodeIndex + 1) % this.nodes.length;
        // Every node tried once without luck: back off (with jitter) before the next round.
        const round = Math.floor((failures - 1) / this.nodes.length);
        const delayMs =
          failures % this.nodes.length === 0 || this.nodes.length === 1 ? backoffMs(round, initial, max) : 0;
        this.log.warn(
          { node, attempt: failures, delayMs, err: e.message },
          `${p}: cannot connect to ${node}${delayMs ? `; next attempt in ${delayMs} ms` : '; trying the next node'}`,
        );
        this.emit('reconnecting', { node, attempt: failures, delayMs, error: e } satisfies ReconnectAttempt);
        if (this.listenerCount('error') > 0) this.emit('error', e);
        if (delayMs) await this.pause.sleep(delayMs);
      }
    }
    if (this.live) await closeQuietly(this.live);
    this.live = null;
  }

  /**
   * Runs every hook on a new connection. A failing hook fails the connection (closed and tried
   * again), except an isolated one (a managed channel): its failure is its own, so the connection
   * and the other channels come up and that hook alone is retried with backoff, as after a
   * channel-level close. An isolated hook whose first build a caller is waiting for is dropped and
   * its failure is the caller's (`addSetup`'s contract).
   */
  private async setup(model: ChannelModel, node: string): Promise<void> {
    this.settingUp = model;
    try {
      await this.runHooks(model, node);
    } finally {
      this.settingUp = null;
    }
  }

  private async runHooks(model: ChannelModel, node: string): Promise<void> {
    coalesceWrites(model);
    // Index loop on purpose: hooks added while this runs are picked up.
    for (let i = 0; i < this.hooks.length; i++) {
      const h = this.hooks[i]!;
      try {
        await h.fn(model);
      } catch (err) {
        const e = err as Error;
        if (h.isolated && !h.waiters.length) {
          h.failedOn = model;
          this.hookFailed(h, h.isolated, model, 1, e, node, 'setting up');
          continue;
        }
        if (h.isolated) {
          this.removeEntry(h);
          i--;
          for (const w of h.waiters.splice(0)) w.reject(e);
          continue;
        }
        this.log.warn({ err: e.message }, 'setup after (re)connect failed; retrying the connection');
        throw err;
      }
      h.ranOn = model;
      h.failedOn = null;
    }
  }

  /** Logs and reports the `attempt`-th failed build of an isolated hook on `model`, and schedules the next try. */
  private hookFailed(
    h: HookEntry,
    iso: IsolatedHook,
    model: ChannelModel,
    attempt: number,
    error: Error,
    node: string | null,
    doing: 'setting up' | 'rebuilding',
    delayMs = 200,
  ): void {
    const next = backoffMs(attempt, delayMs, 5000);
    this.log.warn(
      { err: error.message, attempt, channel: iso.what, node, delayMs: next },
      `${doing} ${iso.what}${doing === 'setting up' && node ? ` on ${node}` : ''} failed; next try in ${next} ms`,
    );
    iso.failed?.({ attempt, delayMs: next, node, error });
    this.retry(h, iso, model, delayMs, attempt, next);
  }

  /**
   * Runs an isolated hook again on `model` after `wait` ms, while it is registered, `model` is
   * still the live connection and the hook says it is needed; on failure, again with backoff. A
   * connection lost meanwhile ends the chain: the recovery runs every hook anyway.
   */
  private retry(h: HookEntry, iso: IsolatedHook, model: ChannelModel, delayMs: number, attempt: number, wait: number) {
    setTimeout(() => {
      // Still setting up the connection it failed on (other hooks running): not yet.
      if (this.settingUp === model && !this.closed) return this.retry(h, iso, model, delayMs, attempt, 100);
      if (this.closed || !this.hooks.includes(h) || this.live !== model || !iso.needed()) return;
      h.fn(model).then(
        () => {
          h.ranOn = model;
          h.failedOn = null;
          for (const w of h.waiters.splice(0)) w.resolve();
        },
        (err: Error) => {
          if (this.live === model) this.hookFailed(h, iso, model, attempt + 1, err, this.node, 'rebuilding', delayMs);
        },
      );
    }, wait).unref();
  }

  /** Runs hooks that were added after the setup loop had passed them, and releases their waiters. */
  private async catchUp(model: ChannelModel): Promise<void> {
    for (const h of [...this.hooks]) {
      // An isolated hook that failed on this connection is being retried on its own.
      if (h.failedOn === model) continue;
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
   * `retry` (isolated hooks only): its first run's failure is its own too, as at a (re)connect: it
   * stays registered, is reported and retried with backoff, and this never waits for a connection.
   */
  async addSetup(
    fn: SetupHook,
    opts: { wait?: boolean; isolated?: IsolatedHook; retry?: boolean } = {},
  ): Promise<void> {
    if (this.closed) throw this.unavailable('connection is closed');
    const entry: HookEntry = { fn, ranOn: null, failedOn: null, waiters: [] };
    if (opts.isolated) entry.isolated = opts.isolated;
    this.hooks.push(entry);
    const model = this.live;
    if (model) {
      try {
        await fn(model);
        entry.ranOn = model;
      } catch (err) {
        if (opts.retry && opts.isolated) {
          if (this.live === model && this.hooks.includes(entry)) {
            entry.failedOn = model;
            this.hookFailed(entry, opts.isolated, model, 1, err as Error, this.node, 'setting up');
          }
          // Else the connection was lost meanwhile: the recovery runs the hook.
          return;
        }
        this.removeEntry(entry);
        throw err;
      }
      return;
    }
    if (opts.wait === false || opts.retry) return;
    await new Promise<void>((resolve, reject) => entry.waiters.push({ resolve, reject }));
  }

  /**
   * Runs a registered hook again on the live connection, after `delayMs`, while `needed()` says so:
   * for a component whose channel closed on a channel-level error (a deleted exchange or queue)
   * while the connection lives on, so no reconnect will run its hook. Retries with backoff until it
   * succeeds; stops when the hook is removed, the connection closes or is lost (the recovery runs
   * every hook anyway). Each failure is logged at warn with `what` (a channel's name), the node and
   * the wait before the next try, and passed to `failed`. The same path retries an isolated hook
   * that failed at (re)connect.
   */
  rerun(
    fn: SetupHook,
    needed: () => boolean = () => true,
    delayMs = 200,
    attempt = 0,
    what = 'a channel',
    wait?: number,
    failed?: (f: HookFailure) => void,
  ): void {
    const entry = this.hooks.find((h) => h.fn === fn);
    const model = this.live;
    if (!entry || !model || this.closed) return;
    const iso: IsolatedHook = { what, needed, ...(failed ? { failed } : {}) };
    this.retry(
      entry,
      iso,
      model,
      delayMs,
      attempt,
      wait ?? (attempt === 0 ? delayMs : backoffMs(attempt, delayMs, 5000)),
    );
  }

  /** A channel that rebuilds itself (see `ManagedChannel`); its state goes to the observer, if any. */
  channel(spec: ChannelSpec): ManagedChannel {
    const mc = new ManagedChannel(this, spec);
    const o = this.opts.observer;
    if (o) {
      mc.on('open', () => o.channel(spec.name, 'down'));
      mc.on('ready', () => o.channel(spec.name, 'ready'));
      mc.on('lost', () => o.channel(spec.name, 'down'));
      mc.on('failed', () => o.channel(spec.name, 'down'));
      mc.on('closed', () => o.channel(spec.name, 'closed'));
    }
    return mc;
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
    this.pause.wake();
    const live = this.live;
    this.live = null;
    for (const h of this.hooks.splice(0))
      for (const w of h.waiters.splice(0)) w.reject(this.unavailable('connection closed'));
    if (live) await closeQuietly(live);
  }
}

/** What a component needs on its channel, declared once; `ManagedChannel` rebuilds it whenever it is lost. */
export interface ChannelSpec {
  /** Names the channel in logs and in `amebo_amqp_channels_ready{channel}`. */
  name: string;
  /** A publisher-confirm channel. */
  confirm?: boolean;
  /** basic.qos before setup. */
  prefetch?: number;
  /**
   * What the channel needs on the broker, as data: asserted (or checked, `passive`) on every new
   * channel after `prefetch` and before `setup`: exchanges, then queues, then bindings. A failure
   * is a failed build like a failing `setup` (retried with backoff; the first one is the caller's).
   */
  declare?: Declarations;
  /** Declarations and consumers, run on every new channel (after a reconnect, a channel-level close or `reset()`). */
  setup?: (ch: Channel) => Promise<void>;
}

/** Exchanges, queues and bindings a channel needs (see `ChannelSpec.declare`). */
export interface Declarations {
  exchanges?: Array<{
    name: string;
    type: 'direct' | 'topic' | 'fanout' | 'headers' | (string & {});
    options?: Options.AssertExchange;
    /** Only check that it exists (someone else declares it, with arguments this side does not know). */
    passive?: boolean;
  }>;
  queues?: Array<{ name: string; options?: Options.AssertQueue; passive?: boolean }>;
  bindings?: Array<{ queue: string; exchange: string; routingKey?: string; args?: Record<string, unknown> }>;
}

/** Asserts (or checks) `d` on `ch`: exchanges, then queues, then bindings. */
export async function applyDeclarations(ch: Channel, d: Declarations): Promise<void> {
  for (const x of d.exchanges ?? [])
    if (x.passive) await ch.checkExchange(x.name);
    else await ch.assertExchange(x.name, x.type, x.options);
  for (const q of d.queues ?? [])
    if (q.passive) await ch.checkQueue(q.name);
    else await ch.assertQueue(q.name, q.options);
  for (const b of d.bindings ?? []) await ch.bindQueue(b.queue, b.exchange, b.routingKey ?? '', b.args);
}

/** What a `ManagedChannel` reports. */
export interface ManagedChannelEvents {
  /** `open()` was called: the channel is built now, or on the next connection. */
  open: [];
  /**
   * A new channel is up and its spec's prefetch and setup ran on it (declarations bound,
   * consumers consuming): on each (re)connect, after a rebuild following `lost`, after `reset()`.
   * The channel is a `ConfirmChannel` when the spec says `confirm`.
   */
  ready: [Channel];
  /** The live channel closed (channel error, consumer cancel + `reset()`, or the connection's loss); a rebuild follows unless closed. */
  lost: [];
  /**
   * A build failed (its setup threw): at a (re)connect, where the connection and the other
   * channels come up all the same, or in a rebuild. The channel stays not ready; the next try
   * follows after `delayMs` (backoff with jitter). Logged at warn with the channel's name and node.
   */
  failed: [HookFailure];
  /** `close()` was called: no more rebuilds. Emitted once. */
  closed: [];
}

/**
 * A channel kept alive: built on every (re)connect, rebuilt with backoff after a channel-level
 * close (a deleted queue, a precondition) while the connection lives, and after `reset()` (what a
 * consumer does when the broker cancels it). Emits `ManagedChannelEvents`.
 */
export class ManagedChannel extends EventEmitter<ManagedChannelEvents> {
  private readonly conn: RecoveringConnection;
  readonly spec: ChannelSpec;
  private ch: Channel | null = null;
  private closed = false;
  private readonly waiters: Array<(ok: boolean) => void> = [];
  private readonly hook: SetupHook = async (model) => {
    const ch = this.spec.confirm ? await model.createConfirmChannel() : await model.createChannel();
    ch.on('error', (err: Error) =>
      this.conn.logger.warn({ err: err.message, channel: this.spec.name }, 'channel error'),
    );
    ch.on('close', () => {
      if (this.ch !== ch) return;
      this.ch = null;
      this.emit('lost');
      if (!this.closed)
        this.conn.rerun(this.hook, this.isolated.needed, 200, 0, this.isolated.what, undefined, this.isolated.failed);
    });
    try {
      if (this.spec.prefetch) await ch.prefetch(this.spec.prefetch);
      if (this.spec.declare) await applyDeclarations(ch, this.spec.declare);
      await this.spec.setup?.(ch);
    } catch (err) {
      await ch.close().catch(() => undefined);
      throw err;
    }
    if (this.closed) {
      await ch.close().catch(() => undefined);
      return;
    }
    this.ch = ch;
    for (const w of this.waiters.splice(0)) w(true);
    this.emit('ready', ch);
  };

  /** A failed build is this channel's alone: the connection comes up and this hook is retried with backoff. */
  private readonly isolated: IsolatedHook;

  constructor(conn: RecoveringConnection, spec: ChannelSpec) {
    super();
    this.conn = conn;
    this.spec = spec;
    this.isolated = {
      what: `channel "${spec.name}"`,
      needed: () => !this.ch && !this.closed,
      failed: (f) => void this.emit('failed', f),
    };
  }

  /**
   * Registers the channel with its connection and builds it now when connected. `wait: false`
   * returns at once while disconnected (it is built on connect); otherwise a failure of the first
   * build is the caller's. Once registered, a failed build at a (re)connect is this channel's
   * alone: the connection and its other channels come up, this one reports `failed` and is
   * retried with backoff. `retry: true` treats the first build the same way (never throws for
   * it, never waits for a connection): for owners with nobody to hand a failure to (the bridge's
   * workers).
   */
  async open(opts: { wait?: boolean; retry?: boolean } = {}): Promise<void> {
    this.emit('open');
    await this.conn.addSetup(this.hook, { ...opts, isolated: this.isolated });
  }

  /** The live channel, or null while it is being rebuilt. */
  get channel(): Channel | null {
    return this.ch;
  }

  get confirmChannel(): ConfirmChannel | null {
    return this.ch as ConfirmChannel | null;
  }

  get ready(): boolean {
    return this.ch !== null;
  }

  /** Waits until the channel is there, at most `timeoutMs`. */
  async waitReady(timeoutMs: number): Promise<boolean> {
    if (this.ch) return true;
    if (this.closed || timeoutMs <= 0) return false;
    return new Promise((resolve) => {
      const w = (ok: boolean): void => {
        clearTimeout(t);
        resolve(ok);
      };
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Closes the channel so that it is rebuilt (setup runs again): after a consumer cancel, say. */
  reset(): void {
    const ch = this.ch;
    if (ch) void ch.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    if (!this.closed) this.emit('closed');
    this.closed = true;
    this.conn.removeSetup(this.hook);
    const ch = this.ch;
    this.ch = null;
    for (const w of this.waiters.splice(0)) w(false);
    if (ch) await ch.close().catch(() => undefined);
  }
}

async function closeQuietly(model: ChannelModel): Promise<void> {
  model.on('error', () => undefined);
  let t: NodeJS.Timeout | undefined;
  await Promise.race([model.close().catch(() => undefined), new Promise((r) => (t = setTimeout(r, 3000)))]);
  clearTimeout(t);
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

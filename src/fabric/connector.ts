/**
 * `FabricConnector`: what amqp-fabric's `AmqBrokerConnector` gives a Python service, for TypeScript,
 * on the same wire: RPC (serve and call), keep-alives and service listing, data streams and remote
 * logs, over one recovering connection whose channels, consumers and declarations are rebuilt after
 * every reconnect.
 */
import { fabricEnv } from '../config.js';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Channel, ConsumeMessage } from 'amqplib';
import { pino, type Logger } from 'pino';
import { FabricUnavailableError } from './errors.js';
import {
  DataPublisher,
  DataSubscription,
  dataBinding,
  encodeDataBody,
  type DataBody,
  type DataHandler,
  type DataHeaders,
  type SubscribeDataOptions,
  type Subscription,
} from './data.js';
import { Directory, keepAliveHeaders, ownFacts, parseBeat, type ServiceChange, type ServiceInfo } from './discovery.js';
import { Link, type ConnectionObserver, type ManagedChannel, type ReconnectAttempt } from './link.js';
import {
  createLogSubscription,
  LogDestination,
  type LogDestinationOptions,
  type LogFilter,
  type LogRecord,
} from './logs.js';
import {
  assertAddress,
  assertMethod,
  DECLARE,
  DEFAULT_DATA_SUFFIX,
  DEFAULT_DISCOVERY_EXCHANGE,
  dataExchange,
  fqnOf,
  MSG_TYPE,
  rpcExchange,
  type ServiceAddress,
} from './names.js';
import { RpcClient, type CallOptions } from './rpc-client.js';
import { collectMethods, RpcServer, type RpcApi, type RpcRegisterOptions, type RpcRegistration } from './rpc-server.js';

export interface FabricConnectorOptions {
  /**
   * Broker URL, e.g. `amqp://guest:guest@127.0.0.1:5672` (vhost in the path), or the nodes of a
   * cluster comma-separated: the connector moves to another node when its node goes away.
   */
  amqpUrl: string;
  /** Group of services that talk to each other, e.g. `project1`. `[A-Za-z0-9_-]{1,63}`, no dots. */
  domain: string;
  /** Kind of service; services of one type share an API. Same character rules. */
  type: string;
  /** This service among those of its type. Instances with the same domain, type and id form an HA clique. */
  id: string;
  /**
   * Version announced in keep-alives.
   * @default '0.0.0'
   */
  version?: string;
  /**
   * Keep-alive interval in ms on the discovery exchange; `0` sends none. Python listeners forget a
   * service after 5 s, so stay well below.
   * @default 1500
   */
  keepAliveMs?: number;
  /**
   * Listen to keep-alives from the start (else on the first `listServices()` / `watchServices()`).
   * @default false
   */
  keepAliveListen?: boolean;
  /**
   * Discovery exchange.
   * @default DISCOVERY_EXCHANGE_NAME from the environment (as amqp-fabric reads it), else 'msc.discovery'
   */
  discoveryExchange?: string;
  /**
   * Suffix of the data exchange `{domain}.{suffix}`.
   * @default DATA_EXCHANGE_NAME from the environment (as amqp-fabric reads it), else 'data'
   */
  dataExchangeSuffix?: string;
  /**
   * Deadline of RPC calls that do not give one.
   * @default 30000
   */
  defaultTimeoutMs?: number;
  /**
   * A listed service is `stale` when no keep-alive came for this long, `down` after `serviceTtlMs`.
   * @default serviceTtlMs / 3
   */
  staleAfterMs?: number;
  /**
   * A listed service is `down` when no keep-alive came for this long.
   * @default 10000
   */
  serviceTtlMs?: number;
  /**
   * How long a down service stays listed (as `down`) before it is forgotten.
   * @default 300000
   */
  forgetAfterMs?: number;
  /**
   * AMQP heartbeat in seconds (dead-connection detection).
   * @default 10
   */
  heartbeatSeconds?: number;
  /**
   * First reconnect delay; doubles up to `reconnectMaxDelayMs`.
   * @default 100
   */
  reconnectInitialDelayMs?: number;
  /**
   * Longest reconnect delay.
   * @default 5000
   */
  reconnectMaxDelayMs?: number;
  /**
   * How long `close()` waits for running calls (served and made) and subscribers to finish.
   * @default 10000
   */
  drainTimeoutMs?: number;
  /**
   * Connection name shown by the broker.
   * @default `fabric:{domain}.{type}.{id}`
   */
  connectionName?: string;
  /**
   * Where the connector reports reconnects and failures. Do not point it at this connector's own
   * `logDestination()`.
   * @default a silent pino logger
   */
  logger?: Logger;
  /**
   * Told of the connection's state (up, each failed attempt with its node) and of each of its
   * channels' (up or being rebuilt): to feed metrics. Amebo's gateway uses it for `/metrics`.
   */
  observer?: ConnectionObserver;
}

/** Filter of {@link FabricConnector.listServices}; both parts match exactly. */
export interface ServiceFilter {
  domain?: string;
  type?: string;
}

/** Methods of `T` as called through a proxy: keyword arguments in, a promise of the result out. */
export type RpcProxy<T> = {
  readonly [K in keyof T as T[K] extends (...a: any[]) => any ? K : never]: T[K] extends (
    args: infer A,
    ...rest: any[]
  ) => infer R
    ? (args?: A, opts?: CallOptions) => Promise<Awaited<R>>
    : never;
} & { readonly health_check: (args?: Record<string, never>, opts?: CallOptions) => Promise<boolean> };

/** Properties a proxy must not turn into calls: `await proxy` looks up `then`, inspection and JSON look up others. */
const NOT_METHODS = new Set([
  'then',
  'catch',
  'finally',
  'toJSON',
  'constructor',
  'inspect',
  'valueOf',
  'toString',
  'asymmetricMatch',
  '$$typeof',
]);

export interface FabricConnectorEvents {
  /** Connected, and every channel, consumer and declaration rebuilt: at open and after each recovery. */
  connect: [];
  /** Emitted right after `connect` (the name the other recovering parts use). */
  ready: [];
  /** The connection was lost; recovery starts at once (the next node first when `amqpUrl` lists several). */
  disconnect: [Error];
  /**
   * A connection attempt failed: the node it tried (password redacted), the attempt number since
   * the last connection, and the wait before the next (0: the next node is tried at once). Also
   * logged at warn on the connector's `logger`.
   */
  reconnecting: [ReconnectAttempt];
  /** The same failure as `reconnecting`, emitted only while someone listens (never unhandled). */
  error: [Error];
  /** A listed service changed status (only while listening to keep-alives). */
  service: [ServiceChange];
}

/**
 * A service on the fabric.
 * @example
 * const fabric = new FabricConnector({ amqpUrl, domain: 'shop', type: 'pricing', id: 'p1', version: '1.2.0' });
 * await fabric.open({ timeoutMs: 10_000 });
 * await fabric.rpcRegister({ multiply: ({ x, y }: { x: number; y: number }) => x * y });
 * const calc = await fabric.rpcProxy<{ multiply(a: { x: number; y: number }): number }>('shop', 'p1', 'pricing');
 * await calc.multiply({ x: 5, y: 7 }); // 35
 */
export class FabricConnector extends EventEmitter<FabricConnectorEvents> {
  readonly domain: string;
  readonly type: string;
  readonly id: string;
  readonly version: string;
  /** `domain.type.id`. */
  readonly fqn: string;
  readonly keepAliveMs: number;
  readonly discoveryExchange: string;
  /** Suffix of every domain's data exchange (`<domain>.<suffix>`). */
  private readonly dataSuffix: string;
  readonly dataExchange: string;
  readonly startedAt = new Date();
  private readonly opts: FabricConnectorOptions;
  private readonly log: Logger;
  private readonly link: Link;
  private readonly client: RpcClient;
  private readonly data: DataPublisher;
  private readonly servers = new Set<RpcServer>();
  private readonly subs = new Set<DataSubscription>();
  private readonly logDests = new Set<LogDestination>();
  private readonly directory: Directory;
  /** Keep-alives and goodbyes go out here; the listing consumes on `listener`. */
  private control: ManagedChannel | null = null;
  private listener: ManagedChannel | null = null;
  private keepAliveTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private listening: Promise<void> | null = null;
  private readonly listenerQueue: string;
  private state: 'new' | 'opening' | 'open' | 'closing' | 'closed' = 'new';

  constructor(opts: FabricConnectorOptions) {
    super();
    const address = { domain: opts.domain, type: opts.type, id: opts.id };
    assertAddress(address);
    this.opts = opts;
    this.domain = opts.domain;
    this.type = opts.type;
    this.id = opts.id;
    this.fqn = fqnOf(address);
    this.version = opts.version ?? '0.0.0';
    this.keepAliveMs = opts.keepAliveMs ?? 1500;
    const env = fabricEnv();
    this.discoveryExchange = opts.discoveryExchange ?? env.discoveryExchange ?? DEFAULT_DISCOVERY_EXCHANGE;
    this.dataSuffix = opts.dataExchangeSuffix ?? env.dataExchangeSuffix ?? DEFAULT_DATA_SUFFIX;
    this.dataExchange = dataExchange(this.domain, this.dataSuffix);
    this.log = opts.logger ?? pino({ level: 'silent' });
    this.link = new Link({
      url: opts.amqpUrl,
      name: opts.connectionName ?? `fabric:${this.fqn}`,
      logger: this.log,
      heartbeatSeconds: opts.heartbeatSeconds ?? 10,
      reconnectInitialDelayMs: opts.reconnectInitialDelayMs ?? 100,
      reconnectMaxDelayMs: opts.reconnectMaxDelayMs ?? 5000,
      observer: opts.observer,
    });
    this.link.on('connect', () => this.emit('connect'));
    this.link.on('ready', () => this.emit('ready'));
    this.link.on('disconnect', (err: Error) => this.emit('disconnect', err));
    this.link.on('reconnecting', (attempt) => this.emit('reconnecting', attempt));
    this.link.on('error', (err: Error) => void (this.listenerCount('error') && this.emit('error', err)));
    this.client = new RpcClient(this.link, this.log, this.fqn, opts.defaultTimeoutMs ?? 30_000);
    this.data = new DataPublisher(this.link, this.log);
    const ttl = opts.serviceTtlMs ?? 10_000;
    this.directory = new Directory(
      { staleAfterMs: opts.staleAfterMs ?? ttl / 3, downAfterMs: ttl },
      opts.forgetAfterMs ?? 300_000,
    );
    // Per process, not per FQN: members of a clique sharing one listener queue would each see only part of the beats.
    this.listenerQueue = `${this.fqn}.lister-${process.pid}-${randomBytes(3).toString('hex')}.subscriber`;
  }

  /** True while the broker connection is up. */
  get connected(): boolean {
    return this.link.connected;
  }

  /** The node of the live connection (one of `amqpUrl`'s, password redacted), or null while reconnecting. */
  get node(): string | null {
    return this.link.node;
  }

  /**
   * Connects, declares the discovery exchange and starts keep-alives (the first one at once).
   * Later connection losses are recovered forever in the background.
   * @param opts.timeoutMs how long to wait for the first connection. @default 10000
   * @throws {FabricUnavailableError} when the broker cannot be reached in time.
   */
  async open(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.state !== 'new') throw new FabricUnavailableError(`connector already ${this.state}`);
    this.state = 'opening';
    const timeoutMs = opts.timeoutMs ?? 10_000;
    try {
      await this.link.open(timeoutMs);
      this.control = this.link.channel({ name: 'fabric control', setup: (ch) => this.setupControl(ch) });
      await this.control.open();
      if (this.opts.keepAliveListen) await this.startListening();
    } catch (err) {
      this.state = 'closed';
      await this.link.close();
      throw err;
    }
    this.state = 'open';
    if (this.keepAliveMs > 0) {
      this.keepAliveTimer = setInterval(() => this.sendKeepAlive(false), this.keepAliveMs);
      this.keepAliveTimer.unref();
    }
  }

  private async setupControl(ch: Channel): Promise<void> {
    // The data exchange is declared on first use: durable exchanges outlive us, no need to leave one per service.
    await ch.assertExchange(this.discoveryExchange, 'headers', DECLARE.durableHeaders);
    // Announce at once (amqp-fabric waits one interval), also after a reconnect.
    if (this.keepAliveMs > 0 && this.state !== 'closing') this.sendKeepAlive(false, ch);
  }

  private sendKeepAlive(goodbye: boolean, ch = this.control?.channel): boolean {
    if (!ch) return false;
    const body = Buffer.from(JSON.stringify(ownFacts(this.version, this.keepAliveMs, this.startedAt)));
    try {
      ch.publish(this.discoveryExchange, '', body, {
        headers: keepAliveHeaders(this, goodbye),
        contentType: 'application/json',
        deliveryMode: 1,
        priority: 0,
      });
      return true;
    } catch {
      return false;
    }
  }

  private startListening(): Promise<void> {
    const listener = this.link.channel({
      name: 'fabric listing',
      setup: async (ch) => {
        await ch.assertExchange(this.discoveryExchange, 'headers', DECLARE.durableHeaders);
        await ch.assertQueue(this.listenerQueue, DECLARE.privateQueue);
        for (const t of [MSG_TYPE.keepAlive, MSG_TYPE.goodbye])
          await ch.bindQueue(this.listenerQueue, this.discoveryExchange, '', { 'x-match': 'all', msg_type: t });
        await ch.consume(this.listenerQueue, (m: ConsumeMessage | null) => (m ? this.onBeat(m) : listener.reset()), {
          noAck: true,
        });
      },
    });
    this.listener = listener;
    this.listening ??= listener
      .open()
      .then(() => {
        this.sweepTimer = setInterval(() => {
          for (const c of this.directory.sweep()) this.emit('service', c);
        }, 500);
        this.sweepTimer.unref();
      })
      .catch((err: unknown) => {
        this.listening = null;
        throw err;
      });
    return this.listening;
  }

  private onBeat(m: ConsumeMessage): void {
    const beat = parseBeat(m.properties, m.content);
    if (!beat) return;
    const change = this.directory.observe(beat);
    if (change) this.emit('service', change);
  }

  /**
   * Services heard on the discovery exchange, with status `up`, `stale` or `down` (down ones stay
   * listed for `forgetAfterMs`). Filters match exactly. The first call starts listening and waits
   * `settleMs` for keep-alives to arrive.
   * @param opts.settleMs wait after starting to listen. @default 2 × keepAliveMs (3000 when keep-alives are off)
   */
  async listServices(filter: ServiceFilter = {}, opts: { settleMs?: number } = {}): Promise<ServiceInfo[]> {
    this.assertOpen();
    if (!this.listening) {
      await this.startListening();
      await new Promise((r) => setTimeout(r, opts.settleMs ?? (this.keepAliveMs > 0 ? 2 * this.keepAliveMs : 3000)));
    } else await this.listening;
    return this.directory.list(filter);
  }

  /** Calls `cb` on every status change of a listed service; returns a function that stops it. */
  async watchServices(cb: (change: ServiceChange) => void): Promise<() => void> {
    this.assertOpen();
    this.on('service', cb);
    await this.startListening();
    return () => this.off('service', cb);
  }

  /**
   * Exposes the methods of `api` to callers: an object's methods (own and class methods not starting
   * with `_`) or a map of name → handler. Each handler gets the keyword arguments as one object
   * (`{}` when none) and may return a value or a promise. `health_check` (→ true) is added unless
   * present. Throw {@link ServiceError} to choose the error type a caller sees.
   */
  async rpcRegister(api: RpcApi, options: RpcRegisterOptions = {}): Promise<RpcRegistration> {
    this.assertOpen();
    const server = new RpcServer(this.link, this.log, this, collectMethods(api, options.methods), {
      drainTimeoutMs: this.opts.drainTimeoutMs,
      ...options,
    });
    await server.start();
    this.servers.add(server);
    return server;
  }

  /**
   * A proxy to the service `domain.type.id`; note the argument order (domain, id, type), as in
   * amqp-fabric's `rpc_proxy`. `proxy.method({ x: 1 })` calls `method` with keyword arguments and
   * resolves to its result, or rejects with {@link RemoteError}, {@link RpcTimeoutError},
   * {@link ServiceNotFoundError} or {@link FabricUnavailableError}.
   * @param opts.timeoutMs deadline of each call through this proxy. @default the connector's `defaultTimeoutMs`
   */
  async rpcProxy<T = Record<string, (args?: any) => unknown>>(
    domain: string,
    id: string,
    type: string,
    opts: CallOptions = {},
  ): Promise<RpcProxy<T>> {
    this.assertOpen();
    const address = { domain, type, id };
    assertAddress(address);
    await this.client.ensureStarted();
    const target = { exchange: rpcExchange(address), fqn: fqnOf(address) };
    const client = this.client;
    const call = (method: string) => {
      assertMethod(method);
      return (args?: object, o?: CallOptions): Promise<unknown> =>
        client.callChecked(target, method, args, o?.timeoutMs ?? opts.timeoutMs);
    };
    const cache = new Map<string, ReturnType<typeof call>>();
    return new Proxy(Object.create(null) as object, {
      get: (_t, prop) => {
        if (typeof prop !== 'string' || NOT_METHODS.has(prop)) return undefined;
        let fn = cache.get(prop);
        if (!fn) cache.set(prop, (fn = call(prop)));
        return fn;
      },
    }) as RpcProxy<T>;
  }

  /**
   * Calls one method (domain, type, id in the usual order), for callers that know the method name
   * at run time (the HTTP gateway, the CLI).
   */
  async rpcCall(address: ServiceAddress, method: string, args?: object, opts: CallOptions = {}): Promise<unknown> {
    this.assertOpen();
    return this.client.call(address, method, args, opts);
  }

  /**
   * Publishes on `{domain}.data` and resolves once the broker confirms. `service_id` and
   * `service_type` are added to (a copy of) the headers. Prefer string header values: filters
   * compare values, and other languages encode numbers differently.
   * @param body bytes as they are, a string as UTF-8, anything else as JSON with sorted keys.
   * @param opts.timeoutMs how long to wait for a connection and the confirm. @default 10000
   */
  async publishData(body: DataBody, headers: DataHeaders = {}, opts: { timeoutMs?: number } = {}): Promise<void> {
    this.assertOpen();
    await this.data.publish(
      this.dataExchange,
      encodeDataBody(body),
      { ...headers, service_id: this.id, service_type: this.type },
      opts.timeoutMs ?? 10_000,
    );
  }

  /**
   * Consumes `{domain}.data` messages whose headers include all of `headers`, on the queue named
   * `name`: subscribers with the same name share the messages, different names each get all.
   * Each message is acked after `handler` resolves; a failing handler gets it once more, then it
   * is dropped.
   */
  async subscribeData(
    name: string,
    headers: DataHeaders,
    handler: DataHandler,
    opts: SubscribeDataOptions = {},
  ): Promise<Subscription> {
    this.assertOpen();
    if (!name || name.length > 255) throw new RangeError('subscribeData: name must be 1..255 characters');
    const exchange = opts.domain ? dataExchange(opts.domain, this.dataSuffix) : this.dataExchange;
    const sub = new DataSubscription(this.link, this.log, {
      exchange,
      queue: name,
      bindings: [dataBinding(headers)],
      handler,
      prefetch: opts.prefetch ?? 16,
    });
    await sub.start();
    this.subs.add(sub);
    return this.tracked(sub);
  }

  /**
   * Tails `{domain}.log.records`: records of one service (`id` or `type.id`) and at or above one
   * level when given.
   */
  async subscribeLogs(filter: LogFilter, handler: (record: LogRecord) => unknown): Promise<Subscription> {
    this.assertOpen();
    const sub = createLogSubscription(this.link, this.log, filter, handler);
    await sub.start();
    this.subs.add(sub);
    return this.tracked(sub);
  }

  private tracked(sub: DataSubscription): Subscription {
    return {
      get queue() {
        return sub.queue;
      },
      cancel: async () => {
        this.subs.delete(sub);
        await sub.cancel(this.opts.drainTimeoutMs);
      },
    };
  }

  /**
   * A pino destination shipping this service's records to `{domain}.log.records`:
   * `pino({ level: 'info' }, fabric.logDestination())`. Best effort: bounded buffer while the
   * broker is away, then records are dropped and counted (`dest.dropped`).
   */
  logDestination(opts: LogDestinationOptions = {}): LogDestination {
    if (this.state === 'closing' || this.state === 'closed') throw new FabricUnavailableError('connector is closed');
    const d = new LogDestination(this.link, this.log, this, opts);
    this.logDests.add(d);
    return d;
  }

  private assertOpen(): void {
    if (this.state !== 'open')
      throw new FabricUnavailableError(
        this.state === 'new' || this.state === 'opening' ? 'connector not open' : 'connector is closed',
      );
  }

  /**
   * Stops taking calls and messages, waits (up to `drainTimeoutMs`) for running handlers and calls
   * in flight, says goodbye on the discovery exchange, flushes remote logs and disconnects.
   */
  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'closing') return;
    const wasOpen = this.state === 'open';
    this.state = 'closing';
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const drain = this.opts.drainTimeoutMs ?? 10_000;
    await Promise.all([
      ...[...this.servers].map((s) => s.close()),
      ...[...this.subs].map((s) => s.cancel(drain)),
      this.client.close(drain),
    ]);
    if (wasOpen && this.keepAliveMs > 0) this.sendKeepAlive(true);
    await Promise.all([...this.logDests].map((d) => d.close()));
    await this.data.close();
    // Closing the channel flushes the goodbye before the connection goes.
    await Promise.all([this.control?.close(), this.listener?.close()]);
    await this.link.close();
    this.state = 'closed';
  }
}

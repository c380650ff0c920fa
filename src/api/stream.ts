import type { RedisNames } from '../redis-names.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ManagedChannel } from '../broker/link.js';
import type { Redis } from 'ioredis';
import type { WebSocket } from 'ws';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { sha256 } from '../secrets.js';
import { AmeboError } from '../errors.js';
import { queryString } from './auth.js';
import { replies, typed } from './schemas.js';
import type { ApiContext } from './server.js';
import { isTopicPattern, topicMatcher, TOPIC_LIMITS } from '../delivery/topic.js';

/** Redis channel on which the bridge and presence announce delivery outcomes and service changes. */

/** Announces a delivery or service note to every API node's stream clients (best effort). */
export async function announceStream(redis: Redis, names: RedisNames, note: Record<string, unknown>): Promise<void> {
  await redis.publish(names.streamChannel, JSON.stringify(note)).catch(() => undefined);
}

interface Client {
  ws: WebSocket;
  patterns: ((key: string) => boolean)[] | null;
}

/** What the stream hub reports (tests wait on these instead of sleeping). */
export interface StreamHubEvents {
  /**
   * The tap consumes from its queue, bound to both events exchanges, and the notes channel is
   * subscribed (`notes: false` when Redis refused): from here on nothing published is missed. Again
   * after every rebuild of the tap (reconnect, channel loss, consumer cancel).
   */
  ready: [{ queue: string; notes: boolean }];
  /** The tap's channel was lost; it is rebuilt by itself (`ready` again). */
  lost: [];
  /**
   * An event (from the tap) or a note (`delivery`, `service`... from Redis) was handled: sent to
   * `clients` of the connected clients (those whose patterns match).
   */
  message: [{ type: string; action: string | null; clients: number }];
  /** The tap or the notes subscription could not be opened; the tail goes on with what it has. */
  error: [Error];
  /** The tap and the notes subscription were closed (the last client left, or the server closes). */
  closed: [];
}

/**
 * The live tail (`GET /v1/stream`): events come from a private auto-delete queue bound to the
 * events exchange (declared only while someone listens, redeclared after reconnects); delivery
 * and service notes come over Redis pub/sub from whichever process produced them.
 */
export class StreamHub extends EventEmitter<StreamHubEvents> {
  private readonly ctx: ApiContext;
  private readonly clients = new Set<Client>();
  /** The tap: a private queue on the events exchanges (ManagedChannel: rebuilt after any loss). */
  private tap: ManagedChannel | null = null;
  private sub: Redis | null = null;
  private subscribed = false;
  private tapQueue: string | null = null;
  private started = false;
  private starting: Promise<void> | null = null;

  constructor(ctx: ApiContext) {
    super();
    this.ctx = ctx;
  }

  /** True while the tap consumes and the notes are subscribed (what `ready` announced). */
  get listening(): boolean {
    return this.started && this.sub !== null && this.tap?.ready === true;
  }

  /** Resolves once the tap consumes and the notes are subscribed (shared by concurrent callers). */
  private start(): Promise<void> {
    this.started = true;
    this.starting ??= this.open();
    return this.starting;
  }

  private fail(err: unknown): void {
    if (this.listenerCount('error')) this.emit('error', err instanceof Error ? err : new Error(String(err)));
  }

  private async open(): Promise<void> {
    const tap = this.ctx.broker.channel({
      name: 'stream tap',
      setup: async (ch) => {
        const q = await ch.assertQueue('', {
          exclusive: true,
          autoDelete: true,
          arguments: { 'x-max-length': 10_000 },
        });
        await ch.bindQueue(q.queue, this.ctx.topology.events, '#');
        await ch.bindQueue(q.queue, this.ctx.topology.restrictedEvents, '#');
        await ch.consume(q.queue, (m) => (m ? this.onEvent(m.fields.routingKey, m.content) : tap.reset()), {
          noAck: true,
        });
        this.tapQueue = q.queue;
      },
    });
    // Rebuilds after the first announce themselves; the first `ready` waits for the notes below.
    tap.on('ready', () => {
      if (this.tap === tap && this.sub) this.emit('ready', { queue: this.tapQueue ?? '', notes: this.subscribed });
    });
    tap.on('lost', () => {
      if (this.tap === tap) this.emit('lost');
    });
    this.tap = tap;
    await tap.open({ wait: false }).catch((err: unknown) => {
      this.ctx.log.warn({ err: (err as Error).message }, 'stream tap unavailable');
      this.fail(err);
    });
    const sub = this.ctx.redis.duplicate();
    sub.on('error', () => undefined);
    sub.on('message', (_c: string, msg: string) => this.onNote(msg));
    this.subscribed = await sub.subscribe(this.ctx.cfg.redis.streamChannel).then(
      () => true,
      (err: unknown) => (this.fail(err), false),
    );
    this.sub = sub;
    if (this.tap === tap && tap.ready) this.emit('ready', { queue: this.tapQueue ?? '', notes: this.subscribed });
  }

  private async stop(): Promise<void> {
    if (!this.started || this.clients.size) return;
    this.started = false;
    await this.starting?.catch(() => undefined);
    if (this.started) return; // a client came back meanwhile and keeps what is open
    this.starting = null;
    const { tap, sub } = this;
    this.tap = null;
    this.sub = null;
    this.subscribed = false;
    this.tapQueue = null;
    sub?.disconnect();
    await tap?.close();
    this.emit('closed');
  }

  get size(): number {
    return this.clients.size;
  }

  async add(c: Client): Promise<void> {
    this.clients.add(c);
    c.ws.on('close', () => {
      this.clients.delete(c);
      void this.stop();
    });
    await this.start();
  }

  private onEvent(action: string, content: Buffer): void {
    let event: unknown;
    let sent = 0;
    for (const c of this.clients) {
      if (c.patterns && !c.patterns.some((p) => p(action))) continue;
      event ??= JSON.parse(content.toString());
      this.send(c, { type: 'event', event });
      sent++;
    }
    this.emit('message', { type: 'event', action, clients: sent });
  }

  private onNote(raw: string): void {
    let note: { type?: string; action?: string };
    try {
      note = JSON.parse(raw) as typeof note;
    } catch {
      return;
    }
    let sent = 0;
    for (const c of this.clients) {
      if (note.type === 'delivery' && c.patterns && note.action && !c.patterns.some((p) => p(note.action!))) continue;
      this.send(c, note);
      sent++;
    }
    this.emit('message', { type: note.type ?? 'note', action: note.action ?? null, clients: sent });
  }

  private send(c: Client, msg: unknown): void {
    // A slow reader is dropped rather than buffered without bound.
    if (c.ws.bufferedAmount > 4 * 1024 * 1024) return void c.ws.close(1013, 'too slow');
    c.ws.send(JSON.stringify(msg));
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.ws.close(1001, 'server closing');
    this.clients.clear();
    await this.stop();
  }
}

/** Most patterns one live-tail client may give. */
const MAX_STREAM_PATTERNS = 32;
const TICKET_TTL_MS = 30_000;

/**
 * One-use tickets for the live tail: a browser cannot set headers on a websocket, and the admin
 * token must not ride in a URL (proxies and browser histories keep URLs). An admin asks for a
 * ticket over an authenticated POST; it opens one stream within 30 s. Kept in Redis so that any API
 * node honours it (in this process while Redis is away).
 */
class Tickets {
  private readonly local = new Map<string, number>();
  private readonly ctx: ApiContext;
  constructor(ctx: ApiContext) {
    this.ctx = ctx;
  }

  private key(ticket: string): string {
    return this.ctx.cfg.redis.ticket(sha256(ticket));
  }

  async issue(): Promise<{ ticket: string; expires_at: string }> {
    const ticket = `amebo_ticket_${randomBytes(24).toString('base64url')}`;
    const until = Date.now() + TICKET_TTL_MS;
    const stored = await this.ctx.redis
      .set(this.key(ticket), '1', 'PX', TICKET_TTL_MS)
      .then(() => true)
      .catch(() => false);
    if (!stored) {
      if (this.local.size > 10_000) this.local.clear();
      this.local.set(this.key(ticket), until);
    }
    return { ticket, expires_at: new Date(until).toISOString() };
  }

  /** True once per ticket, within its lifetime. */
  async redeem(ticket: string): Promise<boolean> {
    const k = this.key(ticket);
    const until = this.local.get(k);
    if (until !== undefined) {
      this.local.delete(k);
      return until > Date.now();
    }
    return (await this.ctx.redis.getdel(k).catch(() => null)) === '1';
  }
}

/** The stream hub serving each API (by its context), for `streamHubOf`. */
const hubs = new WeakMap<ApiContext, StreamHub>();

/**
 * The live-tail hub of a running Amebo (`streamHubOf(amebo)`), or null when it serves no API:
 * tests (and embedders) listen to its events (`ready`, `message`, `closed`...).
 */
export function streamHubOf(amebo: { ctx: ApiContext }): StreamHub | null {
  return hubs.get(amebo.ctx) ?? null;
}

export async function streamRoutes(scope: FastifyInstance, ctx: ApiContext): Promise<void> {
  const app = typed(scope);
  const hub = new StreamHub(ctx);
  hubs.set(ctx, hub);
  const tickets = new Tickets(ctx);
  app.addHook('onClose', async () => hub.close());

  app.post(
    '/v1/stream/tickets',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['stream'],
        summary: 'A one-use ticket (30 s) that opens one live-tail websocket without the admin token in the URL',
        response: replies({
          201: {
            type: 'object',
            additionalProperties: false,
            properties: { ticket: { type: 'string' }, expires_at: { type: 'string', format: 'date-time' } },
            required: ['ticket', 'expires_at'],
          },
        }),
      },
    },
    async (_req, reply) => reply.status(201).send(await tickets.issue()),
  );

  /**
   * The live tail is the admin's: the admin token (header), or, for browsers that cannot set a
   * websocket's headers, a one-use `?ticket=`. The admin token itself is never taken from the URL
   * (proxies, logs and browser histories keep URLs).
   */
  const streamCredentials = async (req: FastifyRequest): Promise<boolean> => {
    const ticket = queryString(req, 'ticket');
    if (queryString(req, 'token') !== undefined)
      throw new AmeboError(
        'UNAUTHENTICATED',
        'the admin token is not taken in the URL: send Authorization: Bearer <admin token>, or ask POST /v1/stream/tickets for a one-use ticket and open /v1/stream?ticket=<ticket>',
      );
    if (ticket) {
      if (!(await tickets.redeem(ticket)))
        throw new AmeboError(
          'UNAUTHENTICATED',
          'the ticket is unknown, used or expired: ask POST /v1/stream/tickets for another',
        );
      return true;
    }
    return false;
  };

  // A plain GET (no upgrade) is told what to do; `wsHandler` serves the websocket. Declared this
  // way (not `websocket: true`, which hides the route) so the OpenAPI document lists the stream.
  app.route({
    method: 'GET',
    url: '/v1/stream',
    handler: async () => {
      throw new AmeboError(
        'UPGRADE_REQUIRED',
        'the live tail is a websocket: connect with Upgrade: websocket (e.g. `amebo monitor`)',
      );
    },
    wsHandler: async (socket, req) => {
      const { actions } = req.query;
      const patterns = actions ? actions.split(',').map((p) => topicMatcher(p.trim())) : null;
      await hub.add({ ws: socket, patterns });
      // After the subscription is in place: from `hello` on, nothing published is missed.
      socket.send(JSON.stringify({ type: 'hello', actions: actions ? actions.split(',') : ['#'] }));
    },
    config: { auth: { admin: true, admits: streamCredentials } },
    schema: {
      tags: ['stream'],
      summary:
        'Live tail over a websocket (admin): events, delivery outcomes, service changes. Authenticate with Authorization: Bearer, or ?ticket= from POST /v1/stream/tickets',
      description:
        'Messages are JSON: {"type":"hello","actions":[...]} first, then {"type":"event","event":{...}}, {"type":"delivery",...} and {"type":"service",...}.',
      querystring: {
        type: 'object',
        properties: {
          actions: { type: 'string', maxLength: 2048, description: 'comma-separated actions or topic patterns' },
          ticket: { type: 'string', maxLength: 128 },
        },
      },
      response: replies({
        101: { description: 'Switching Protocols: the websocket is open' },
      }),
    },
    preValidation: async (req: FastifyRequest) => {
      if (hub.size >= ctx.cfg.streamMaxClients)
        throw new AmeboError(
          'RATE_LIMITED',
          `this process already serves ${hub.size} live-tail clients (AMEBO_STREAM_MAX_CLIENTS)`,
          undefined,
          { 'retry-after': '5' },
        );
      const actions = queryString(req, 'actions');
      const list = actions ? actions.split(',') : [];
      if (list.length > MAX_STREAM_PATTERNS)
        throw new AmeboError('VALIDATION', `at most ${MAX_STREAM_PATTERNS} patterns`);
      for (const p of list)
        if (!isTopicPattern(p.trim()))
          throw new AmeboError(
            'VALIDATION',
            `"${p.slice(0, 100)}" is not an action or topic pattern (segments of [A-Za-z0-9_-], * or #; at most ${TOPIC_LIMITS.maxSegments} segments, ${TOPIC_LIMITS.maxLength} characters)`,
          );
    },
  });
}

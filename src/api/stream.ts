import type { FastifyInstance } from 'fastify';
import type { ChannelModel, Channel } from 'amqplib';
import type { Redis } from 'ioredis';
import type { WebSocket } from 'ws';
import { AmeboError } from '../errors.js';
import type { ApiContext } from './server.js';

/** AMQP topic matching: `*` is one word, `#` zero or more words. */
export function topicMatcher(pattern: string): (routingKey: string) => boolean {
  const p = pattern.split('.');
  const match = (i: number, k: string[], j: number): boolean => {
    if (i === p.length) return j === k.length;
    if (p[i] === '#') {
      for (let x = j; x <= k.length; x++) if (match(i + 1, k, x)) return true;
      return false;
    }
    if (j === k.length) return false;
    return (p[i] === '*' || p[i] === k[j]) && match(i + 1, k, j + 1);
  };
  return (key) => match(0, key.split('.'), 0);
}

/** Redis channel on which the bridge and presence announce delivery outcomes and service changes. */
export const streamChannel = (redisPrefix: string): string => `${redisPrefix}stream`;

/** Announces a delivery or service note to every API node's stream clients (best effort). */
export async function announceStream(redis: Redis, redisPrefix: string, note: Record<string, unknown>): Promise<void> {
  await redis.publish(streamChannel(redisPrefix), JSON.stringify(note)).catch(() => undefined);
}

interface Client {
  ws: WebSocket;
  patterns: ((key: string) => boolean)[] | null;
}

/**
 * The live tail (`GET /v1/stream`): events come from a private auto-delete queue bound to the
 * events exchange (declared only while someone listens, redeclared after reconnects); delivery
 * and service notes come over Redis pub/sub from whichever process produced them.
 */
class StreamHub {
  private readonly ctx: ApiContext;
  private readonly clients = new Set<Client>();
  private ch: Channel | null = null;
  private sub: Redis | null = null;
  private started = false;
  private starting: Promise<void> | null = null;
  private readonly hook = async (model: ChannelModel): Promise<void> => {
    const ch = await model.createChannel();
    ch.on('error', () => undefined);
    const q = await ch.assertQueue('', { exclusive: true, autoDelete: true, arguments: { 'x-max-length': 10_000 } });
    await ch.bindQueue(q.queue, this.ctx.topology.events, '#');
    await ch.consume(q.queue, (m) => m && this.onEvent(m.fields.routingKey, m.content), { noAck: true });
    this.ch = ch;
  };

  constructor(ctx: ApiContext) {
    this.ctx = ctx;
  }

  /** Resolves once the tap consumes and the notes are subscribed (shared by concurrent callers). */
  private start(): Promise<void> {
    this.started = true;
    this.starting ??= this.open();
    return this.starting;
  }

  private async open(): Promise<void> {
    await this.ctx.broker
      .addHook(this.hook)
      .catch((err: unknown) => this.ctx.log.warn({ err: (err as Error).message }, 'stream tap unavailable'));
    const sub = this.ctx.redis.duplicate();
    sub.on('error', () => undefined);
    sub.on('message', (_c: string, msg: string) => this.onNote(msg));
    await sub.subscribe(streamChannel(this.ctx.cfg.redisPrefix)).catch(() => undefined);
    this.sub = sub;
  }

  private async stop(): Promise<void> {
    if (!this.started || this.clients.size) return;
    this.started = false;
    await this.starting?.catch(() => undefined);
    if (this.started) return; // a client came back meanwhile and keeps what is open
    this.starting = null;
    this.ctx.broker.removeHook(this.hook);
    const { ch, sub } = this;
    this.ch = null;
    this.sub = null;
    sub?.disconnect();
    await ch?.close().catch(() => undefined);
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
    for (const c of this.clients) {
      if (c.patterns && !c.patterns.some((p) => p(action))) continue;
      event ??= JSON.parse(content.toString());
      this.send(c, { type: 'event', event });
    }
  }

  private onNote(raw: string): void {
    let note: { type?: string; action?: string };
    try {
      note = JSON.parse(raw) as typeof note;
    } catch {
      return;
    }
    for (const c of this.clients) {
      if (note.type === 'delivery' && c.patterns && note.action && !c.patterns.some((p) => p(note.action!))) continue;
      this.send(c, note);
    }
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

export async function streamRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const hub = new StreamHub(ctx);
  app.addHook('onClose', async () => hub.close());
  app.get(
    '/v1/stream',
    {
      websocket: true,
      schema: {
        tags: ['stream'],
        summary: 'Live tail over a websocket: events, delivery outcomes, service changes (admin)',
        querystring: {
          type: 'object',
          properties: { actions: { type: 'string', maxLength: 2048 }, token: { type: 'string', maxLength: 512 } },
        },
      },
      preValidation: async (req) => {
        const token = (req.query as { token?: string }).token;
        if (token) {
          if (!ctx.auth.isAdminToken(token)) throw new AmeboError('UNAUTHENTICATED', 'invalid admin token');
        } else await ctx.auth.admin(req);
        const actions = (req.query as { actions?: string }).actions;
        for (const p of actions ? actions.split(',') : [])
          if (!/^(?:[A-Za-z0-9_-]+|\*|#)(?:\.(?:[A-Za-z0-9_-]+|\*|#))*$/.test(p.trim()))
            throw new AmeboError('VALIDATION', `"${p}" is not an action or topic pattern`);
      },
    },
    async (socket, req) => {
      const actions = (req.query as { actions?: string }).actions;
      const patterns = actions ? actions.split(',').map((p) => topicMatcher(p.trim())) : null;
      await hub.add({ ws: socket, patterns });
      // After the subscription is in place: from `hello` on, nothing published is missed.
      socket.send(JSON.stringify({ type: 'hello', actions: actions ? actions.split(',') : ['#'] }));
    },
  );
}

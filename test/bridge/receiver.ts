/** A real HTTP webhook receiver on loopback that records every request and answers as scripted. */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  json: any;
  at: number;
}

export interface Answer {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  delayMs?: number;
}

/** Decides the answer to a request; `n` counts earlier requests with the same webhook-id on this path. */
export type Behaviour = (r: Received, n: number) => Answer | Promise<Answer>;

export class Receiver {
  readonly got: Received[] = [];
  private server: Server;
  private readonly behaviours = new Map<string, Behaviour>();
  private readonly seen = new Map<string, number>();
  private readonly delays = new Set<NodeJS.Timeout>();
  port = 0;

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        const path = (req.url ?? '/').split('?')[0]!;
        const r: Received = { path, headers: req.headers, body, json, at: Date.now() };
        this.got.push(r);
        const key = `${path} ${String(req.headers['webhook-id'])}`;
        const n = this.seen.get(key) ?? 0;
        this.seen.set(key, n + 1);
        const b = this.behaviours.get(path);
        void Promise.resolve(b ? b(r, n) : {}).then(async (a) => {
          if (a.delayMs)
            await new Promise<void>((x) => {
              const t = setTimeout(() => {
                this.delays.delete(t);
                x();
              }, a.delayMs);
              this.delays.add(t);
            });
          if (res.destroyed) return;
          res.writeHead(a.status ?? 200, { 'content-type': 'text/plain', ...(a.headers ?? {}) });
          res.end(a.body ?? 'ok');
        });
      });
    });
    this.server.keepAliveTimeout = 60_000;
  }

  async listen(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  on(path: string, b: Behaviour): void {
    this.behaviours.set(path, b);
  }

  at(path: string): Received[] {
    return this.got.filter((r) => r.path === path);
  }

  /** Distinct event ids that got a 2xx-bound request on `path` (as seen by the receiver). */
  ids(path: string): string[] {
    return this.at(path).map((r) => String(r.headers['webhook-id']));
  }

  async close(): Promise<void> {
    // Answers still being delayed are abandoned (their sockets are closed below).
    for (const t of this.delays) clearTimeout(t);
    this.delays.clear();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** Creates an application with an action and returns helpers to subscribe and publish. */
export async function seed(
  call: (m: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', p: string, body?: unknown, auth?: any) => Promise<any>,
  app: string,
  actions: string[],
): Promise<[string, string]> {
  const secret = `${app}-secret-0123456789`;
  const a = await call('POST', '/v1/applications', { application: app, secret }, 'admin');
  if (a.status !== 201) throw new Error(`application: ${a.status} ${JSON.stringify(a.body)}`);
  for (const action of actions) {
    const r = await call('POST', '/v1/actions', { action, application: app, schemata: {} }, [app, secret]);
    if (r.status !== 201) throw new Error(`action: ${r.status} ${JSON.stringify(r.body)}`);
  }
  return [app, secret];
}

/**
 * Two http subscriptions of `action` on the receiver: `flaky` (one attempt, so a failure is dead at
 * once; its answers are the caller's `rx.on('/flaky', ...)`) and `steady`. Returns their ids by name.
 */
export async function flakyAndSteady(
  call: (m: 'POST', p: string, body: unknown, auth: 'admin') => Promise<{ status: number; body: any }>,
  rx: Receiver,
  application: string,
  action: string,
): Promise<Record<'flaky' | 'steady', string>> {
  const ids = { flaky: '', steady: '' };
  for (const [name, extra] of [
    ['flaky', { max_attempts: 1 }],
    ['steady', {}],
  ] as const) {
    const r = await call(
      'POST',
      '/v1/subscriptions',
      { application, subscription: name, action, handler: rx.url(`/${name}`), ...extra },
      'admin',
    );
    if (r.status !== 201) throw new Error(`subscription ${name}: ${r.status} ${JSON.stringify(r.body)}`);
    ids[name] = r.body.id;
  }
  return ids;
}

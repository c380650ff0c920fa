/**
 * A webhook handler for Amebo subscriptions: checks the Standard Webhooks signature with the
 * `standardwebhooks` package, opens JWE payloads with `jose` when the subscription registered an
 * encryption key, and answers 2xx quickly (Amebo retries anything else, and 410 unsubscribes).
 *
 * The tour (with `npm start` running): it sets itself up with the admin token (AMEBO_ADMIN_TOKEN, or
 * the .amebo/admin-token `npm start` saved) — application `tour`, action `tour.hello`, and a
 * subscription to its own URL — prints each verified delivery, and removes what it created on Ctrl-C:
 *
 *   npx tsx examples/webhook-receiver.ts
 *   node bin/amebo.js publish tour.hello '{"hello": "world"}'   # in another terminal
 *
 * For a subscription you made yourself, give its signing secret (and encryption key, if any):
 *
 *   AMEBO_SIGNING_SECRET=whsec_... [AMEBO_ENCRYPTION_KEY=<base64 32 bytes>] npx tsx examples/webhook-receiver.ts
 *
 * Environment: AMEBO_URL (default http://127.0.0.1:8701), PORT (default 3000), ACTION (default tour.hello).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { compactDecrypt } from 'jose';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { request } from 'undici';

const AMEBO = (process.env.AMEBO_URL ?? 'http://127.0.0.1:8701').replace(/\/+$/, '');
const PORT = Number(process.env.PORT ?? 3000);
const ACTION = process.env.ACTION ?? 'tour.hello';
const APPLICATION = ACTION.split('.')[0]!;
const key = process.env.AMEBO_ENCRYPTION_KEY ? Buffer.from(process.env.AMEBO_ENCRYPTION_KEY, 'base64') : null;
const seen = new Set<string>(); // webhook-id is stable across retries: use it to ignore repeats
let webhook: Webhook | null = process.env.AMEBO_SIGNING_SECRET ? new Webhook(process.env.AMEBO_SIGNING_SECRET) : null;

function adminToken(): string | undefined {
  if (process.env.AMEBO_ADMIN_TOKEN) return process.env.AMEBO_ADMIN_TOKEN;
  try {
    return readFileSync('.amebo/admin-token', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** One admin call to Amebo, bounded in time. */
async function amebo(method: 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await request(AMEBO + path, {
    method,
    headers: {
      authorization: `Bearer ${adminToken()}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : null };
}

/** What the tour created, removed on exit. */
const created: { subscription?: string; application?: string } = {};

/** Application, action and a subscription to this receiver; returns the subscription's signing secret. */
async function setUp(): Promise<string> {
  const app = await amebo('POST', '/v1/applications', {
    application: APPLICATION,
    secret: randomBytes(18).toString('base64url'),
  });
  if (app.status === 201) created.application = APPLICATION;
  else if (app.status !== 409)
    throw new Error(`creating application ${APPLICATION}: ${app.status} ${JSON.stringify(app.body)}`);
  const action = await amebo('POST', '/v1/actions', { action: ACTION, application: APPLICATION, schemata: {} });
  if (action.status !== 201 && action.status !== 409)
    throw new Error(`creating action ${ACTION}: ${action.status} ${JSON.stringify(action.body)}`);
  const sub = await amebo('POST', '/v1/subscriptions', {
    application: APPLICATION,
    subscription: `receiver-${PORT}-${randomBytes(3).toString('hex')}`,
    action: ACTION,
    handler: `http://127.0.0.1:${PORT}/webhooks/amebo`,
  });
  if (sub.status !== 201) {
    const hint =
      sub.body?.error?.code === 'AMEBO_ERR_TARGET_FORBIDDEN'
        ? ' (webhooks to this machine are refused: start Amebo with `npm start`, or set AMEBO_ALLOWED_TARGETS=127.0.0.1)'
        : '';
    throw new Error(`subscribing: ${sub.status} ${JSON.stringify(sub.body)}${hint}`);
  }
  created.subscription = sub.body.id;
  process.stdout.write(
    `subscribed ${APPLICATION}/${sub.body.subscription} to ${ACTION}; publish one with:\n` +
      `  node bin/amebo.js publish ${ACTION} '{"hello": "world"}'\n`,
  );
  return sub.body.signing_secret as string;
}

async function cleanUp(): Promise<void> {
  if (created.subscription) await amebo('DELETE', `/v1/subscriptions/${created.subscription}`).catch(() => undefined);
  if (created.application) await amebo('DELETE', `/v1/applications/${created.application}`).catch(() => undefined);
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    void (async () => {
      if (!webhook) return void res.writeHead(503).end();
      const body = Buffer.concat(chunks).toString('utf8');
      let event: { id: string; action: string; attempt: number; payload: unknown };
      try {
        event = webhook.verify(body, req.headers as Record<string, string>) as typeof event;
      } catch (err) {
        res.writeHead(err instanceof WebhookVerificationError ? 401 : 400).end();
        return;
      }
      if (seen.has(event.id)) return void res.writeHead(200).end('duplicate');
      let payload = event.payload;
      if (key && typeof payload === 'string') {
        const { plaintext } = await compactDecrypt(payload, key);
        payload = JSON.parse(new TextDecoder().decode(plaintext));
      }
      seen.add(event.id);
      process.stdout.write(`${event.action} ${event.id} (attempt ${event.attempt}): ${JSON.stringify(payload)}\n`);
      res.writeHead(204).end();
    })().catch(() => res.writeHead(500).end());
  });
});

await new Promise<void>((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});
process.stdout.write(`listening on http://127.0.0.1:${PORT}/webhooks/amebo\n`);
if (!webhook) {
  if (!adminToken()) {
    process.stderr.write(
      'give AMEBO_SIGNING_SECRET (a subscription signing_secret, whsec_...), or the admin token ' +
        '(AMEBO_ADMIN_TOKEN, or run where `npm start` saved .amebo/admin-token) to set the tour up\n',
    );
    process.exit(2);
  }
  try {
    webhook = new Webhook(await setUp());
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    await cleanUp();
    process.exit(1);
  }
}
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    server.close();
    void cleanUp().then(() => process.exit(0));
  });

/**
 * A webhook handler for Amebo subscriptions: checks the Standard Webhooks signature with the
 * `standardwebhooks` package, opens JWE payloads with `jose` when the subscription registered an
 * encryption key, and answers 2xx quickly (Amebo retries anything else, and 410 unsubscribes).
 *
 *   AMEBO_SIGNING_SECRET=whsec_... [AMEBO_ENCRYPTION_KEY=<base64 32 bytes>] PORT=3000 npx tsx examples/webhook-receiver.ts
 *
 * then subscribe with `"handler": "http://127.0.0.1:3000/webhooks/amebo"`.
 */
import { createServer } from 'node:http';
import { compactDecrypt } from 'jose';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';

const secret = process.env.AMEBO_SIGNING_SECRET;
if (!secret) {
  process.stderr.write('set AMEBO_SIGNING_SECRET to the subscription signing_secret (whsec_...)\n');
  process.exit(2);
}
const webhook = new Webhook(secret);
const key = process.env.AMEBO_ENCRYPTION_KEY ? Buffer.from(process.env.AMEBO_ENCRYPTION_KEY, 'base64') : null;
const seen = new Set<string>(); // webhook-id is stable across retries: use it to ignore repeats

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    void (async () => {
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
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () =>
  process.stdout.write(`listening on http://127.0.0.1:${process.env.PORT ?? 3000}/webhooks/amebo\n`),
);

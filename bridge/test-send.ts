import { uuidv7 } from '../src/ids.js';
import type { BrokerEvent } from '../src/broker/message.js';
import { isWildcard } from '../src/delivery/topic.js';
import type { SubscriptionRow } from '../src/store/registry.js';
import type { TargetPolicy } from '../src/targets.js';
import { secretKey } from './envelope.js';
import { Sender, type Attempt } from './sender.js';

export interface TestSendDeps {
  /** The subscription's signing secrets in force, newest first. */
  signingSecrets(row: SubscriptionRow): string[];
  /** Opens a value sealed at rest (the encryption key). */
  unseal(sealed: string): string;
  /** Which addresses a test send may reach. */
  targets: TargetPolicy;
  connectTimeoutMs: number;
}

/**
 * `POST /v1/subscriptions/:id/test`: a synthetic event sent to the handler now, signed and shaped
 * as a real delivery, reported but not recorded. One keep-alive pool per API instance.
 */
export class TestSender {
  private readonly sender: Sender;
  private readonly deps: TestSendDeps;

  constructor(deps: TestSendDeps) {
    this.deps = deps;
    this.sender = new Sender({
      connectTimeoutMs: deps.connectTimeoutMs,
      targets: deps.targets,
      connectionsPerOrigin: 4,
    });
  }

  async send(row: SubscriptionRow): Promise<Attempt & { event: string }> {
    const id = uuidv7();
    const action = isWildcard(row.action) ? 'amebo.test' : row.action;
    const e: BrokerEvent = {
      id,
      action,
      application: 'amebo',
      deduper: null,
      timestamp: new Date().toISOString(),
      conversation_id: id,
      payload: { test: true, message: 'This is a test event sent by Amebo.' },
    };
    const a = await this.sender.send(
      {
        id: row.id,
        label: `${row.application}/${row.name}`,
        url: new URL(row.handler!),
        timeoutMs: row.timeout_ms,
        format: row.format,
        keys: this.deps.signingSecrets(row).map(secretKey),
        encryptionKey: row.encryption_key ? Buffer.from(this.deps.unseal(row.encryption_key), 'base64') : null,
      },
      { id, action, event: e },
      1,
    );
    return { ...a, event: id };
  }

  close(): Promise<void> {
    return this.sender.close();
  }
}

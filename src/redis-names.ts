/**
 * Every Redis key and pub/sub channel Amebo uses, in one place, all under `<AMEBO_PREFIX>:`. The
 * same prefix names the RabbitMQ exchanges and queues, so two deployments sharing a RabbitMQ and a
 * Redis (pub/sub ignores database numbers) see none of each other's traffic when their prefixes
 * differ. A leaf: imports nothing of ours.
 */
import { createHash } from 'node:crypto';

export class RedisNames {
  /** `<prefix>:`; every name below starts with it. */
  readonly root: string;

  constructor(prefix: string) {
    this.root = `${prefix}:`;
  }

  // ---- pub/sub channels ----
  /** Registry changes (schema, action, application): other nodes drop their cache entry. */
  get registryChannel(): string {
    return `${this.root}registry`;
  }
  /** Subscription created/changed/deleted: bridges re-sync at once. */
  get subscriptionsChannel(): string {
    return `${this.root}subscriptions`;
  }
  /** Notes for the live tail (deliveries, service changes) from every node. */
  get streamChannel(): string {
    return `${this.root}stream`;
  }
  /** Circuit-breaker state changes, so every worker reacts at once. */
  get breakerChannel(): string {
    return `${this.root}breaker`;
  }

  // ---- keys ----
  /** The short id of a webhook endpoint (its URL) in breaker keys. */
  static endpointId(endpoint: string): string {
    return createHash('sha1').update(endpoint).digest('hex').slice(0, 20);
  }
  /** Circuit-breaker state of one endpoint (`kind` is the field group: state, fail, probe). */
  breaker(kind: string, endpointId: string): string {
    return `${this.root}breaker:${kind}:${endpointId}`;
  }
  /** Failed-authentication counter per client address or application. */
  authFail(kind: 'ip' | 'app', id: string): string {
    return `${this.root}authfail:${kind}:${id}`;
  }
  /** A one-use live-tail ticket (by its hash). */
  ticket(hash: string): string {
    return `${this.root}ticket:${hash}`;
  }
  /** An ordered subscription's held head event. */
  held(subscription: string, event: string): string {
    return `${this.root}held:${subscription}:${event}`;
  }
  /** A subscription's rate-limit pacing slot. */
  pace(subscription: string): string {
    return `${this.root}pace:${subscription}`;
  }
  /** Held by the one bridge process that samples queue depths this round. */
  get samplerLock(): string {
    return `${this.root}sampler`;
  }
  /** Prefix under which the fabric presence keeps the fleet (`fabric:services`, `fabric:svc:*`). */
  get presence(): string {
    return this.root;
  }
}

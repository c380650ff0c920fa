import type { Options } from 'amqplib';
import type { ManagedChannel } from './link.js';
import type { Logger } from '../log.js';
import { BrokerUnavailableError, type Broker } from './connection.js';
import { send } from './send.js';

export interface PublisherOptions {
  /** Most unconfirmed publishes in flight; more wait for a slot. @default 2048 */
  window?: number;
  logger: Logger;
  /** Names the channel in metrics. @default 'publisher' */
  name?: string;
}

/**
 * A publisher-confirm channel with a bounded window of in-flight confirms and socket backpressure
 * (`publish()` returning false waits for `drain`). Each `publish` resolves when the broker confirms
 * and rejects on nack or when the channel dies first: the caller then knows the message may not
 * have been taken and keeps it (the outbox relay publishes it again).
 */
export class ConfirmPublisher {
  private readonly mc: ManagedChannel;
  private readonly window: number;
  private inflight = 0;
  private draining = false;
  private readonly slotWaiters: (() => void)[] = [];

  constructor(broker: Broker, opts: PublisherOptions) {
    this.window = opts.window ?? 2048;
    this.mc = broker.channel({ name: opts.name ?? 'publisher', confirm: true });
    this.mc.on('ready', (ch) => {
      this.draining = false;
      ch.on('drain', () => {
        this.draining = false;
        this.wakeAll();
      });
      this.wakeAll();
    });
    // Publishes waiting for a slot learn that the channel is gone (they fail; the relay has them).
    this.mc.on('lost', () => {
      this.draining = false;
      this.wakeAll();
    });
  }

  async start(): Promise<void> {
    await this.mc.open({ wait: false });
  }

  get ready(): boolean {
    return this.mc.ready;
  }

  /** Emits `ready` and `lost` as the channel comes and goes. */
  get events(): ManagedChannel {
    return this.mc;
  }

  get inFlight(): number {
    return this.inflight;
  }

  /** Waits until a channel is there, at most `timeoutMs`. */
  waitReady(timeoutMs: number): Promise<boolean> {
    return this.mc.waitReady(timeoutMs);
  }

  private wakeAll(): void {
    for (const w of this.slotWaiters.splice(0)) w();
  }

  async publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish = {}): Promise<void> {
    while (this.inflight >= this.window || this.draining) {
      if (!this.mc.ready) throw new BrokerUnavailableError();
      await new Promise<void>((r) => this.slotWaiters.push(r));
    }
    const ch = this.mc.confirmChannel;
    if (!ch) throw new BrokerUnavailableError();
    this.inflight++;
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const settle = (err: unknown): void => {
        if (done) return;
        done = true;
        this.inflight--;
        const w = this.slotWaiters.shift();
        if (w) w();
        if (err) reject(err instanceof Error ? err : new Error('the broker nacked the publish'));
        else resolve();
      };
      try {
        const ok = send(ch, exchange, routingKey, content, options, (err) => settle(err));
        if (!ok) this.draining = true;
      } catch (err) {
        settle(err);
      }
    });
  }

  async close(): Promise<void> {
    const ch = this.mc.confirmChannel;
    if (ch) await Promise.race([ch.waitForConfirms().catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
    await this.mc.close();
    this.wakeAll();
  }
}

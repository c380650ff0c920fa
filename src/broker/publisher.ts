import type { ChannelModel, ConfirmChannel, Options } from 'amqplib';
import type { Logger } from '../log.js';
import { BrokerUnavailableError, type Broker } from './connection.js';

export interface PublisherOptions {
  /** Most unconfirmed publishes in flight; more wait for a slot. @default 2048 */
  window?: number;
  logger: Logger;
}

/**
 * A publisher-confirm channel with a bounded window of in-flight confirms and socket backpressure
 * (`publish()` returning false waits for `drain`). Each `publish` resolves when the broker confirms
 * and rejects on nack or when the channel dies first: the caller then knows the message may not
 * have been taken and keeps it (the outbox relay publishes it again).
 */
export class ConfirmPublisher {
  private readonly broker: Broker;
  private readonly window: number;
  private readonly log: Logger;
  private ch: ConfirmChannel | null = null;
  private closed = false;
  private inflight = 0;
  private draining = false;
  private readonly slotWaiters: (() => void)[] = [];
  private readonly channelWaiters: (() => void)[] = [];
  private readonly hook = async (model: ChannelModel): Promise<void> => {
    const ch = await model.createConfirmChannel();
    ch.on('error', (err: Error) => this.log.warn({ err: err.message }, 'publisher channel error'));
    ch.on('close', () => {
      const mine = this.ch === ch;
      if (mine) this.ch = null;
      this.draining = false;
      this.wakeAll();
      // A channel-level error (a publish to a deleted exchange, say) closes the channel while the
      // connection lives on: open a new one (a lost connection is the recovery's).
      if (mine && !this.closed) this.broker.rerun(this.hook, () => !this.ch && !this.closed);
    });
    ch.on('drain', () => {
      this.draining = false;
      this.wakeAll();
    });
    this.ch = ch;
    this.draining = false;
    for (const w of this.channelWaiters.splice(0)) w();
  };

  constructor(broker: Broker, opts: PublisherOptions) {
    this.broker = broker;
    this.window = opts.window ?? 2048;
    this.log = opts.logger;
  }

  async start(): Promise<void> {
    await this.broker.addHook(this.hook);
  }

  get ready(): boolean {
    return this.ch !== null;
  }

  get inFlight(): number {
    return this.inflight;
  }

  /** Waits until a channel is there, at most `timeoutMs`. */
  async waitReady(timeoutMs: number): Promise<boolean> {
    if (this.ch) return true;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        const i = this.channelWaiters.indexOf(w);
        if (i >= 0) this.channelWaiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      const w = (): void => {
        clearTimeout(t);
        resolve(true);
      };
      this.channelWaiters.push(w);
    });
  }

  private wakeAll(): void {
    for (const w of this.slotWaiters.splice(0)) w();
  }

  async publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish = {}): Promise<void> {
    while (this.inflight >= this.window || this.draining) {
      if (!this.ch) throw new BrokerUnavailableError();
      await new Promise<void>((r) => this.slotWaiters.push(r));
    }
    const ch = this.ch;
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
        const ok = ch.publish(exchange, routingKey, content, options, (err) => settle(err));
        if (!ok) this.draining = true;
      } catch (err) {
        settle(err);
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.broker.removeHook(this.hook);
    const ch = this.ch;
    this.ch = null;
    if (ch) {
      await Promise.race([ch.waitForConfirms().catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
      await ch.close().catch(() => undefined);
    }
    this.wakeAll();
  }
}

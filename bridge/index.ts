import type { Amebo, PartStarter } from '../src/app.js';
import type { Config } from '../src/config.js';
import { Bridge, type BridgeOptions } from './bridge.js';
import { QueueSampler } from './sampler.js';

export { Bridge, type BridgeEvents, type BridgeOptions } from './bridge.js';
export type { RecorderEvents } from './recorder.js';
export { QueueSampler, type SamplerEvents } from './sampler.js';

/** The bridge running in each Amebo of this process (one at most), for `bridgeOf`. */
const running = new WeakMap<Amebo, Bridge>();
const samplers = new WeakMap<Amebo, QueueSampler>();

/** The queue-depth sampler of a running Amebo's bridge part, or null. */
export function samplerOf(amebo: Amebo): QueueSampler | null {
  return samplers.get(amebo) ?? null;
}

/**
 * The bridge part of a running Amebo, or null when it has none: tests (and embedders) listen to
 * its events (`synced`, `applied`, `worker-started`...) and its recorder's (`bridge.recorder`).
 */
export function bridgeOf(amebo: Amebo): Bridge | null {
  return running.get(amebo) ?? null;
}

/** A bridge part with explicit options (tests use short breaker cool-downs). */
export function bridgeStarter(opts?: BridgeOptions): PartStarter {
  return async (amebo) => {
    const bridge = new Bridge(amebo, opts ?? bridgeOptions(amebo.cfg));
    try {
      await bridge.start();
    } catch (err) {
      await bridge.close().catch(() => undefined);
      throw err;
    }
    running.set(amebo, bridge);
    const sampler = new QueueSampler({
      pool: amebo.ctx.pool,
      redis: amebo.redis,
      names: amebo.cfg.redis,
      broker: amebo.ctx.broker,
      topology: amebo.ctx.topology,
      log: amebo.ctx.log.child({ role: 'sampler' }),
      intervalMs: amebo.cfg.queueSampleMs,
      keepDays: amebo.cfg.queueSampleKeepDays,
    });
    samplers.set(amebo, sampler);
    sampler.start();
    return {
      close: async () => {
        running.delete(amebo);
        samplers.delete(amebo);
        await sampler.stop();
        await bridge.close();
      },
    };
  };
}

/** Bridge options from the configuration (AMEBO_BREAKER*). */
export function bridgeOptions(cfg: Config): BridgeOptions {
  if (!cfg.breaker) return { breaker: false };
  return {
    breaker: {
      threshold: cfg.breakerThreshold,
      windowMs: cfg.breakerWindowMs,
      cooldownMs: cfg.breakerCooldownMs,
      maxCooldownMs: cfg.breakerMaxCooldownMs,
    },
  };
}

/** The bridge role (design §6): delivers every http subscription's queue to its handler. */
export const startBridge: PartStarter = (amebo) => bridgeStarter()(amebo);

import type { PartStarter } from '../src/app.js';
import type { Config } from '../src/config.js';
import { Bridge, type BridgeOptions } from './bridge.js';

export { Bridge, type BridgeOptions } from './bridge.js';

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
    return { close: () => bridge.close() };
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

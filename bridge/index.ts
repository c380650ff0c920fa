import type { PartStarter } from '../src/app.js';
import { Bridge, envBridgeOptions, type BridgeOptions } from './bridge.js';

export { Bridge, type BridgeOptions } from './bridge.js';

/** A bridge part with explicit options (tests use short breaker cool-downs). */
export function bridgeStarter(opts: BridgeOptions = envBridgeOptions()): PartStarter {
  return async (amebo) => {
    const bridge = new Bridge(amebo, opts);
    try {
      await bridge.start();
    } catch (err) {
      await bridge.close().catch(() => undefined);
      throw err;
    }
    return { close: () => bridge.close() };
  };
}

/** The bridge role (design §6): delivers every http subscription's queue to its handler. */
export const startBridge: PartStarter = (amebo) => bridgeStarter()(amebo);

/**
 * `amebo`: the package's root entry point. Services on the bus import the fabric SDK
 * (`FabricConnector`, also at `amebo/fabric`) and the native consumer (`consume`, also at
 * `amebo/sdk`); embedding Amebo in another process takes `startServer` with a config from
 * `loadConfig`.
 */
export * from './fabric/index.js';
export * from './sdk/index.js';
export { AmeboError, ERRORS, type ErrorCode, type ErrorName } from './errors.js';
export { loadConfig, ConfigError, ROLES, type Config, type Role } from './config.js';
export { createLogger } from './log.js';
export { startAmebo, ServiceUnreachableError, type Amebo, type PartStarter, type StartOptions } from './app.js';

import { startAmebo as start, type Amebo as Running } from './app.js';
import type { Config } from './config.js';
import { createLogger as logger } from './log.js';
import { extraParts, extraPlugins } from './plugins.js';

/**
 * Starts Amebo as `amebo serve` does (the roles in `cfg.roles`: API, relay, bridge, presence,
 * with the delivery routes, services listing and RPC gateway), listening on `cfg.address`.
 */
export async function startServer(cfg: Config, log = logger(cfg.logLevel)): Promise<Running> {
  return start(cfg, log, { plugins: await extraPlugins(cfg), parts: await extraParts(cfg) });
}

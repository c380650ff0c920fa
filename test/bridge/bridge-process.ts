/**
 * A bridge-only Amebo in its own process, for the kill -9, side-by-side and outage tests.
 * AMEBO_TEST_OVERRIDES: the test env's config overrides (JSON); AMEBO_TEST_BRIDGE: bridge options (JSON).
 * Prints READY <pid> once consuming.
 */
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startAmebo } from '../../src/app.js';
import { bridgeStarter } from '../../bridge/index.js';

const overrides = JSON.parse(process.env.AMEBO_TEST_OVERRIDES ?? '{}') as Record<string, unknown>;
const cfg = loadConfig({ ...overrides, roles: 'bridge' }, {});
const amebo = await startAmebo(cfg, createLogger(cfg.logLevel, `bridge-${process.pid}`), {
  parts: [bridgeStarter(JSON.parse(process.env.AMEBO_TEST_BRIDGE ?? '{}'))],
  listen: false,
  skipMigrate: true,
});
process.stdout.write(`READY ${process.pid}\n`);
const stop = (): void => {
  void amebo.close().then(() => process.exit(0));
  setTimeout(() => process.exit(1), 10_000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

import type { Config } from './config.js';
import type { ApiContext } from './api/server.js';
import type { PartStarter } from './app.js';

/**
 * API plugins of the parts that live outside the core (bridge deliveries, fabric gateway and
 * services, stream, dashboard), mounted by `serve` when their role runs here.
 */
export async function extraPlugins(_cfg: Config): Promise<NonNullable<ApiContext['plugins']>> {
  return [];
}

/** Parts beyond the core that this process runs, by role. */
export async function extraParts(_cfg: Config): Promise<PartStarter[]> {
  return [];
}

import type { Pool } from './db.js';

/** One round trip to PostgreSQL (`/ready`). */
export async function ping(pool: Pool): Promise<void> {
  await pool.query('SELECT 1');
}

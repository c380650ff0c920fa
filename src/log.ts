import { pino, type Logger } from 'pino';

export type { Logger };

/** One pino logger per process; secrets and credentials never reach the log. */
export function createLogger(level: string, name = 'amebo'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: [
        'req.headers.authorization',
        'headers.authorization',
        '*.secret',
        '*.signing_secret',
        '*.passphrase',
        '*.password',
        'secret',
      ],
      censor: '[redacted]',
    },
  });
}

/** A URL fit for logs and API output: its credentials (user and password) replaced by `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    if (u.password) u.password = '***';
    if (u.username) u.username = u.password ? u.username : '***';
    return u.toString();
  } catch {
    return url;
  }
}

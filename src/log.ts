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

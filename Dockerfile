# Amebo: `amebo serve` (API, bridge, relay, presence, dashboard) on 0.0.0.0:8701.
# RabbitMQ, PostgreSQL and Redis come from outside (see docker-compose.yml): set AMEBO_AMQP_URL,
# AMEBO_DATABASE_URL and AMEBO_REDIS_URL. The database is created and migrated at start.
FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    AMEBO_ADDRESS=0.0.0.0:8701 \
    AMEBO_STATE_DIR=/app/.amebo \
    npm_config_update_notifier=false

WORKDIR /app

# Dependencies first (cached while the lock file is unchanged). tsx is a runtime dependency:
# bin/amebo.js runs the TypeScript sources directly, so there is no build step.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY . .
# Generated local state (admin token, secret key when not configured) is the only thing written.
RUN mkdir -p /app/.amebo && chown node:node /app/.amebo

USER node
EXPOSE 8701

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8701/health', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

CMD ["node", "bin/amebo.js", "serve", "--address", "0.0.0.0:8701"]

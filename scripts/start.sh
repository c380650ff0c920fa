#!/usr/bin/env bash
# The README's start command (`npm start`): installs dependencies when missing, brings up
# RabbitMQ, PostgreSQL and Redis on loopback when they are installed but stopped (or installs
# them as root), then runs `amebo serve` (API, bridge, relay, presence, dashboard). Extra
# arguments go to `amebo serve` (e.g. `npm start -- --workers 2 --address 0.0.0.0:8701`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash scripts/services.sh
exec node bin/amebo.js serve "$@"

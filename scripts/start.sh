#!/usr/bin/env bash
# The README's start command (`npm start`): installs dependencies when missing, brings up
# RabbitMQ, PostgreSQL and Redis on loopback when they are installed but stopped (or installs
# them as root), then runs `amebo serve` (API, bridge, relay, presence, dashboard). Extra
# arguments go to `amebo serve` (e.g. `npm start -- --workers 2 --address 0.0.0.0:8701`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash scripts/services.sh
# Local development: webhooks to receivers on this machine are allowed (production blocks every
# private target unless AMEBO_ALLOWED_TARGETS names it). Set AMEBO_ALLOWED_TARGETS to override.
if [ -z "${AMEBO_ALLOWED_TARGETS+x}" ]; then
  export AMEBO_ALLOWED_TARGETS='127.0.0.0/8,::1,localhost'
  echo "amebo: npm start allows webhook targets on loopback (AMEBO_ALLOWED_TARGETS=$AMEBO_ALLOWED_TARGETS)" >&2
fi
exec node bin/amebo.js serve "$@"

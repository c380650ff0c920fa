#!/usr/bin/env bash
# The README's test command (`npm test`): brings up what the tests need, then runs every suite
# against the real RabbitMQ, PostgreSQL and Redis on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash scripts/services.sh
shopt -s nullglob
files=(test/*.test.ts test/*/*.test.ts)
exec node --import tsx --test --test-concurrency="${AMEBO_TEST_CONCURRENCY:-2}" --test-timeout=180000 "$@" "${files[@]}"

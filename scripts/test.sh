#!/usr/bin/env bash
# The README's test command (`npm test`): brings up what the tests need, then runs every suite
# against the real RabbitMQ, PostgreSQL and Redis on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
# --extras: Chromium for the dashboard's browser tests and python3-aiormq for the interop tests
# (installed once, best effort; the tests that need them fail saying how to install them).
bash scripts/services.sh --extras
# What killed runs left on the shared services (databases older than 2 h, their queues and keys).
node --import tsx test/helpers/sweep.ts || true
shopt -s nullglob
files=()
for f in test/*.test.ts test/*/*.test.ts; do [[ $f == test/serial/* || $f == test/chaos/* ]] || files+=("$f"); done
# test/serial restarts the shared RabbitMQ and Redis, so it runs alone, after everything else.
serial=(test/serial/*.test.ts)
run() { node --import tsx --test --test-concurrency="$1" --test-timeout=240000 "${@:2}"; }
rc=0
run "${AMEBO_TEST_CONCURRENCY:-2}" "$@" "${files[@]}" || rc=$?
if [ ${#serial[@]} -gt 0 ] && [ "${AMEBO_TEST_SERIAL:-1}" = 1 ]; then
  run 1 "$@" "${serial[@]}" || rc=$?
fi
# test/chaos kills RabbitMQ nodes, Amebo processes, PostgreSQL and Redis of its own stack
# (scripts/cluster.sh: three clustered nodes on 5681-5683, PostgreSQL on 5442, Redis on 6390), last.
chaos=(test/chaos/*.test.ts)
if [ ${#chaos[@]} -gt 0 ] && [ "${AMEBO_TEST_CHAOS:-1}" = 1 ] && [ $# -eq 0 ]; then
  node --import tsx --test --test-concurrency=1 --test-timeout=900000 "${chaos[@]}" || rc=$?
fi
exit $rc

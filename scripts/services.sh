#!/usr/bin/env bash
# Brings up what Amebo needs on loopback: RabbitMQ (127.0.0.1:5672), PostgreSQL (127.0.0.1:5432)
# and Redis (127.0.0.1:6379). Idempotent and quiet: one line per service.
#   - reachable                     -> nothing to do
#   - installed but stopped         -> started on loopback, then waited for (bounded)
#   - not installed, running as root -> apt-get install (Debian packages), then started
#   - not installed, not root       -> says what is missing and how to get it, exits 1
#
# Usage: bash scripts/services.sh [--extras | --cluster | --cluster-down]
#   --extras        also installs, best effort (root + apt only), what some test suites use:
#                   python3-aiormq (interop tests) and chromium (dashboard browser tests).
#   --cluster       instead: brings up the chaos stack (`bash scripts/cluster.sh up`: three clustered
#                   RabbitMQ nodes on 5681-5683, PostgreSQL on 5442, Redis on 6390; see its --help)
#   --cluster-down  instead: stops the chaos stack and removes its files (`bash scripts/cluster.sh down`)
# Environment:
#   AMEBO_SKIP_SERVICES=1        do nothing (services are managed elsewhere)
#   AMEBO_SERVICES_TIMEOUT=SEC   longest wait for one service to come up (default 90)
#   AMEBO_RABBITMQ_MANAGEMENT=1  also enable the RabbitMQ management plugin (best effort)
set -euo pipefail

if [ "${AMEBO_SKIP_SERVICES:-0}" = 1 ]; then
  exit 0
fi

extras=0
cluster=''
for arg in "$@"; do
  case "$arg" in
    --extras) extras=1 ;;
    --cluster) cluster=up ;;
    --cluster-down) cluster=down ;;
    -h | --help)
      sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "services.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

if [ -n "$cluster" ]; then
  if [ "$#" -ne 1 ]; then
    echo "services.sh: --cluster and --cluster-down go alone (try --help)" >&2
    exit 2
  fi
  exec bash "$(dirname "${BASH_SOURCE[0]}")/cluster.sh" "$cluster"
fi

timeout_s="${AMEBO_SERVICES_TIMEOUT:-90}"
is_root=0
[ "$(id -u)" = 0 ] && is_root=1
log_dir="${TMPDIR:-/tmp}/amebo-services.$(id -u)" # start/apt logs and the lock, per user
mkdir -p "$log_dir"

# --- probes ------------------------------------------------------------------------------------

# port_open HOST PORT: a TCP connect within 2 s.
port_open() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

reachable() {
  case "$1" in
    postgresql)
      if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1
      else
        port_open 127.0.0.1 5432
      fi
      ;;
    rabbitmq) port_open 127.0.0.1 5672 ;;
    redis) port_open 127.0.0.1 6379 ;;
  esac
}

url_of() {
  case "$1" in
    rabbitmq) echo 'amqp://127.0.0.1:5672' ;;
    postgresql) echo 'postgres://127.0.0.1:5432' ;;
    redis) echo 'redis://127.0.0.1:6379' ;;
  esac
}

package_of() {
  case "$1" in
    rabbitmq) echo rabbitmq-server ;;
    postgresql) echo postgresql ;;
    redis) echo redis-server ;;
  esac
}

installed() {
  case "$1" in
    rabbitmq) command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] ;;
    postgresql) command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 ;;
    redis) command -v redis-server >/dev/null 2>&1 ;;
  esac
}

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

pg_version() {
  ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# The command a person would run to start a stopped service (for messages).
start_hint() {
  local sudo=''
  [ "$is_root" = 1 ] || sudo='sudo '
  case "$1" in
    rabbitmq) echo "${sudo}rabbitmq-server -detached" ;;
    postgresql) echo "${sudo}pg_ctlcluster --skip-systemctl-redirect ${pg_ver_hint:-\$(ls /etc/postgresql)} main start" ;;
    redis)
      echo "${sudo}mkdir -p /var/lib/redis /var/log/redis && ${sudo}redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
      ;;
  esac
}

# --- apt -----------------------------------------------------------------------------------------

apt_updated=0
apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

apt_update_once() {
  [ "$apt_updated" = 1 ] && return 0
  apt_updated=1
  DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update >"$log_dir/apt-update.log" 2>&1 || {
    echo "services: apt-get update failed (see $log_dir/apt-update.log)" >&2
    return 1
  }
}

apt_install() {
  apt_update_once || true
  DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" --no-install-recommends "$@" \
    >"$log_dir/apt-install.log" 2>&1 9>&-
}

# --- starting --------------------------------------------------------------------------------

configure_fresh_postgresql() {
  local ver conf
  ver="$(pg_version)"
  if [ -z "$ver" ]; then
    ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    pg_createcluster "$ver" main >/dev/null
  fi
  conf="/etc/postgresql/$ver/main"
  cat >"$conf/pg_hba.conf" <<'EOF'
# Written by Amebo's scripts/services.sh for a local development/CI cluster: trust on loopback only.
local   all all           trust
host    all all 127.0.0.1/32 trust
host    all all ::1/128      trust
EOF
  if grep -qE "^[[:space:]]*listen_addresses" "$conf/postgresql.conf"; then
    sed -i -E "s/^[[:space:]]*listen_addresses.*/listen_addresses = 'localhost'/" "$conf/postgresql.conf"
  else
    echo "listen_addresses = 'localhost'" >>"$conf/postgresql.conf"
  fi
  # A cluster the package already started reads the new pg_hba.conf on reload.
  pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null 2>&1 || true
}

configure_fresh_rabbitmq() {
  # Loopback only, and a node name that does not depend on the host name.
  if ! grep -qs '^listeners\.tcp' /etc/rabbitmq/rabbitmq.conf; then
    printf '%s\n' 'listeners.tcp.local = 127.0.0.1:5672' 'management.tcp.ip = 127.0.0.1' >>/etc/rabbitmq/rabbitmq.conf
  fi
  if ! grep -qs '^NODENAME' /etc/rabbitmq/rabbitmq-env.conf; then
    printf '%s\n' 'NODENAME=rabbit@localhost' 'ERL_EPMD_ADDRESS=127.0.0.1' \
      'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"' >>/etc/rabbitmq/rabbitmq-env.conf
  fi
}

# start_service SVC: runs the start command; fails only when the command itself failed.
start_service() {
  local svc="$1" out="$log_dir/start-$1.log" rc=0
  : >"$out"
  case "$svc" in
    postgresql)
      if [ -z "$(pg_version)" ] && [ "$is_root" = 1 ]; then
        configure_fresh_postgresql >>"$out" 2>&1 # installed, but no cluster yet
      fi
      pg_ver_hint="$(pg_version)"
      pg_ctlcluster --skip-systemctl-redirect "$pg_ver_hint" main start >>"$out" 2>&1 9>&- || rc=$?
      [ "$rc" = 2 ] && rc=0 # "already running" (e.g. still starting up): the wait decides
      ;;
    redis)
      if [ "$is_root" = 1 ]; then mkdir -p /var/lib/redis /var/log/redis; fi
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log >>"$out" 2>&1 9>&- || rc=$?
      ;;
    rabbitmq)
      if [ "${AMEBO_RABBITMQ_MANAGEMENT:-0}" = 1 ]; then
        rabbitmq-plugins enable --offline rabbitmq_management >>"$out" 2>&1 || true
      fi
      # A node that is still booting must not be started twice. Many open files: with the usual
      # soft limit of 1024, RabbitMQ's file handle cache runs out at ~300 quorum queues (each
      # reserves ~3 handles) and new connections then hang in the AMQP handshake.
      if ! rabbit_node_running; then
        (ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
          exec rabbitmq-server -detached) >>"$out" 2>&1 9>&- || rc=$?
      fi
      ;;
  esac
  return "$rc"
}

rabbit_node_running() {
  if command -v pgrep >/dev/null 2>&1; then
    pgrep -f 'beam.*-s rabbit boot' >/dev/null 2>&1
  else
    grep -qsa -- '-s.rabbit.boot' /proc/[0-9]*/cmdline
  fi
}

wait_up() {
  local svc="$1" deadline=$((SECONDS + timeout_s)) restarts=0
  until reachable "$svc"; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    # A RabbitMQ node that was still shutting down when we looked was not started: start it now.
    if [ "$svc" = rabbitmq ] && [ "$restarts" -lt 2 ] && ! rabbit_node_running; then
      sleep 2
      if ! reachable rabbitmq && ! rabbit_node_running; then
        restarts=$((restarts + 1))
        start_service rabbitmq || true
      fi
    fi
    sleep 0.5
  done
}

fail_service() {
  local svc="$1" why="$2"
  echo "$svc: $why at $(url_of "$svc")" >&2
  if installed "$svc"; then
    echo "  start it with: $(start_hint "$svc")" >&2
    [ -s "$log_dir/start-$svc.log" ] && sed 's/^/  | /' "$log_dir/start-$svc.log" | tail -n 20 >&2
  else
    echo "  install it with: sudo apt-get install $(package_of "$svc")" >&2
    echo "  then start it with: $(start_hint "$svc")" >&2
  fi
  echo "  (or set AMEBO_SKIP_SERVICES=1 and point AMEBO_AMQP_URL / AMEBO_DATABASE_URL / AMEBO_REDIS_URL elsewhere)" >&2
}

# --- main ----------------------------------------------------------------------------------------

services=(rabbitmq postgresql redis)
declare -A up=()
down=()
for svc in "${services[@]}"; do
  if reachable "$svc"; then up[$svc]=1; else down+=("$svc"); fi
done

if [ "${#down[@]}" -gt 0 ]; then
  # Serialize concurrent runs (test suites, npm start) so a service is started once. Daemons are
  # started with fd 9 closed, so the lock dies with this script (a stale holder costs one timeout).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$log_dir/lock"
    flock -w "$timeout_s" 9 || true
  fi

  missing=()
  for svc in "${down[@]}"; do
    installed "$svc" || missing+=("$svc")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$is_root" = 1 ] && command -v apt-get >/dev/null 2>&1; then
      pkgs=()
      for svc in "${missing[@]}"; do pkgs+=("$(package_of "$svc")"); done
      echo "services: installing ${pkgs[*]} (apt-get)..."
      if ! apt_install "${pkgs[@]}"; then
        echo "services: apt-get install ${pkgs[*]} failed; last lines of $log_dir/apt-install.log:" >&2
        tail -n 20 "$log_dir/apt-install.log" >&2 || true
        exit 1
      fi
      # Fresh installs are ours to configure: loopback only, trust auth (a package that started its
      # service already picks up pg_hba.conf on reload; RabbitMQ's listeners apply at its next start).
      for svc in "${missing[@]}"; do
        case "$svc" in
          postgresql) configure_fresh_postgresql ;;
          rabbitmq) configure_fresh_rabbitmq ;;
        esac
      done
    else
      for svc in "${missing[@]}"; do fail_service "$svc" 'not installed, nothing listening'; done
      [ "$is_root" = 1 ] || echo "services: not running as root, so nothing was installed." >&2
      exit 1
    fi
  fi

  # Start everything that is down first, then wait: the slow ones (RabbitMQ) boot in parallel.
  declare -A started_at=() start_failed=()
  for svc in "${down[@]}"; do
    if reachable "$svc"; then
      up[$svc]=1 # another run (or the package's own start) was quicker
      continue
    fi
    started_at[$svc]="$(now)"
    start_service "$svc" || start_failed[$svc]=1
  done
  failed=0
  for svc in redis postgresql rabbitmq; do # quickest first, so each timing is its own
    [[ " ${down[*]} " == *" $svc "* ]] || continue
    [ -n "${up[$svc]:-}" ] && continue
    if [ -n "${start_failed[$svc]:-}" ] && ! reachable "$svc"; then
      fail_service "$svc" 'could not be started, nothing listening'
      failed=1
    elif wait_up "$svc"; then
      up[$svc]="started in $(elapsed "${started_at[$svc]}") s"
    else
      fail_service "$svc" "did not come up within ${timeout_s} s"
      failed=1
    fi
  done
  [ "$failed" = 0 ] || exit 1
fi

if [ "${AMEBO_RABBITMQ_MANAGEMENT:-0}" = 1 ] && command -v rabbitmq-plugins >/dev/null 2>&1; then
  timeout 60 rabbitmq-plugins -q enable rabbitmq_management >/dev/null 2>&1 ||
    echo "rabbitmq: could not enable the management plugin (ignored)" >&2
fi

for svc in "${services[@]}"; do
  note="${up[$svc]:-1}"
  if [ "$note" = 1 ]; then
    echo "$svc: up at $(url_of "$svc")"
  else
    echo "$svc: up at $(url_of "$svc") ($note)"
  fi
done

# --- extras (best effort, never fatal) -------------------------------------------------------------

if [ "$extras" = 1 ]; then
  want=()
  pkg_installed python3-aiormq || want+=(python3-aiormq)
  { pkg_installed chromium || [ -x /usr/bin/chromium ]; } || want+=(chromium)
  # The certificates of the Redis/Sentinel TLS test (test/redis-sentinel.test.ts).
  command -v openssl >/dev/null 2>&1 || want+=(openssl)
  if [ "${#want[@]}" -gt 0 ]; then
    if [ "$is_root" = 1 ] && command -v apt-get >/dev/null 2>&1; then
      t0="$(now)"
      got=()
      lost=()
      for pkg in "${want[@]}"; do
        if apt_install "$pkg"; then got+=("$pkg"); else lost+=("$pkg"); fi
      done
      [ "${#got[@]}" -eq 0 ] || echo "extras: installed ${got[*]} ($(elapsed "$t0") s)"
      [ "${#lost[@]}" -eq 0 ] ||
        echo "extras: could not install ${lost[*]} (apt-get failed; the tests that need them will skip or fail)" >&2
    else
      echo "extras: missing ${want[*]}; install with: sudo apt-get install ${want[*]}" >&2
    fi
  fi
fi
exit 0

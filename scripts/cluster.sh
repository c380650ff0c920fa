#!/usr/bin/env bash
# A disposable "chaos stack" on loopback for the chaos test suite, beside (never touching) the shared
# services of scripts/services.sh. Everything lives under one base directory and is removed by `down`:
#   - RabbitMQ: three clustered nodes amebo-c1@localhost, amebo-c2@localhost, amebo-c3@localhost,
#     AMQP on 127.0.0.1:5681/5682/5683, Erlang distribution on 25681/25682/25683, their own Erlang
#     cookie (HOME=<base>/home) and no plugins (so nothing binds 15672/15692/25672)
#   - PostgreSQL: its own cluster on 127.0.0.1:5442 (trust auth, fsync off: disposable)
#   - Redis: its own server on 127.0.0.1:6390 (no persistence)
# Needs the Debian packages rabbitmq-server, postgresql and redis-server (scripts/services.sh installs
# them); runs as root (PostgreSQL then runs as the `postgres` user) or as any user. Every command is
# bounded in time.
#
# Usage: bash scripts/cluster.sh COMMAND
#   up             start whatever is not running, cluster c2 and c3 to c1, wait until the three nodes
#                  run as one cluster, PostgreSQL accepts and Redis answers PING (idempotent)
#   down           stop everything the stack runs and remove the base directory
#   status         one line per service (exit 3 when something is not up)
#   urls           AMEBO_AMQP_URL (the three nodes, comma-separated), AMEBO_DATABASE_URL, AMEBO_REDIS_URL
#   kill-node N    kill -9 the Erlang VM of node N (1..3) and wait until it is gone
#   start-node N   start node N again; wait until it runs and is back in the cluster
#   stop-app N     rabbitmqctl stop_app on node N (VM stays up, AMQP port closes)
#   start-app N    rabbitmqctl start_app on node N; wait until its AMQP port accepts
#   pg-stop        stop PostgreSQL immediately (no checkpoint, like a crash)
#   pg-start       start PostgreSQL again; wait until it accepts
#   redis-restart  shut Redis down without saving and start it again, empty
# Environment:
#   AMEBO_CLUSTER_DIR=DIR       base directory (default ${TMPDIR:-/tmp}/amebo-cluster)
#   AMEBO_CLUSTER_HOST=NAME     host part of the node names (default localhost)
#   AMEBO_CLUSTER_TIMEOUT=SEC   longest wait of `up` and of the per-node commands (default 120)
set -euo pipefail

base="${AMEBO_CLUSTER_DIR:-${TMPDIR:-/tmp}/amebo-cluster}"
base="${base%/}"
host="${AMEBO_CLUSTER_HOST:-localhost}"
timeout_s="${AMEBO_CLUSTER_TIMEOUT:-120}"
amqp_ports=(0 5681 5682 5683) # index = node number
dist_ports=(0 25681 25682 25683)
pg_port=5442
redis_port=6390
marker="$base/.amebo-cluster" # `down` removes only a directory that holds this file

node_name() { echo "amebo-c$1@$host"; }

# --- tools -----------------------------------------------------------------------------------------

# RabbitMQ's own scripts: the Debian /usr/sbin wrappers switch to the rabbitmq user through `su`,
# which resets HOME (and so the Erlang cookie); the scripts behind them take the environment as is.
rmq_sbin=''
for dir in "${AMEBO_RABBITMQ_SBIN:-}" /usr/lib/rabbitmq/bin "$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /nonexistent/x)")"; do
  if [ -n "$dir" ] && [ -x "$dir/rabbitmq-server" ] && [ -x "$dir/rabbitmqctl" ]; then
    rmq_sbin="$dir"
    break
  fi
done

pg_bin=''
for dir in "${AMEBO_PG_BIN:-}" $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    pg_bin="$dir"
    break
  fi
done
[ -n "$pg_bin" ] || pg_bin="$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")"

is_root=0
[ "$(id -u)" = 0 ] && is_root=1

die() {
  echo "cluster: $*" >&2
  exit 1
}

need_tools() {
  [ -n "$rmq_sbin" ] || die "RabbitMQ is not installed (apt-get install rabbitmq-server)"
  [ -x "$pg_bin/initdb" ] || die "PostgreSQL is not installed (apt-get install postgresql)"
  command -v redis-server >/dev/null 2>&1 || die "Redis is not installed (apt-get install redis-server)"
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli is not installed (apt-get install redis-tools)"
}

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# remaining DEADLINE: seconds left until DEADLINE (a $SECONDS value), at least 1.
remaining() {
  local left=$(($1 - SECONDS))
  [ "$left" -ge 1 ] || left=1
  echo "$left"
}

port_open() {
  # shellcheck disable=SC2016 # $1 belongs to the inner shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# --- RabbitMQ ----------------------------------------------------------------------------------------

node_dir() { echo "$base/rabbit/c$1"; }

# The environment of node N's server and of the CLI talking to it.
rmq_env() {
  local n="$1" d
  d="$(node_dir "$n")"
  printf '%s\n' \
    "HOME=$base/home" \
    "RABBITMQ_CONF_ENV_FILE=$base/rabbit/rabbitmq-env.conf" \
    "RABBITMQ_NODENAME=$(node_name "$n")" \
    "RABBITMQ_USE_LONGNAME=false" \
    "RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf" \
    "RABBITMQ_CONFIG_FILES=$d/conf.d/*.conf" \
    "RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config" \
    "RABBITMQ_MNESIA_BASE=$d/mnesia" \
    "RABBITMQ_LOG_BASE=$d/log" \
    "RABBITMQ_PID_FILE=$d/beam.pid" \
    "RABBITMQ_ENABLED_PLUGINS_FILE=$base/rabbit/enabled_plugins" \
    "RABBITMQ_PLUGINS_EXPAND_DIR=$d/plugins-expand" \
    "RABBITMQ_DIST_PORT=${dist_ports[$n]}" \
    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}" \
    "ERL_EPMD_ADDRESS=127.0.0.1"
}

# ctl N SECONDS ARGS...: rabbitmqctl (quiet) against node N, bounded.
ctl() {
  local n="$1" t="$2"
  shift 2
  local envs
  mapfile -t envs < <(rmq_env "$n")
  timeout --kill-after=5 "$t" env "${envs[@]}" "$rmq_sbin/rabbitmqctl" -q -n "$(node_name "$n")" "$@" </dev/null
}

# beam_pid N: the OS pid of node N's Erlang VM when it is alive (pid file, checked against the
# process's environment so that a recycled pid is never taken for ours), else nothing.
beam_pid() {
  local n="$1" f pid
  for f in "$(node_dir "$n")/beam.pid" "$(node_dir "$n")/launcher.pid"; do
    pid="$(cat "$f" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    if pid_alive "$pid" && tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "RABBITMQ_NODENAME=$(node_name "$n")"; then
      if [ "${f##*/}" = beam.pid ]; then
        echo "$pid"
        return 0
      fi
      echo "$pid" # the launcher (the rabbitmq-server script), before the VM wrote its pid file
      return 0
    fi
  done
  return 1
}

node_alive() { beam_pid "$1" >/dev/null; }

write_rabbit_files() {
  mkdir -p "$base/rabbit" "$base/home"
  chmod 700 "$base/home"
  if [ ! -s "$base/home/.erlang.cookie" ]; then
    (umask 077 && printf 'AMEBOCLUSTER%s' "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)" >"$base/home/.erlang.cookie")
  fi
  chmod 400 "$base/home/.erlang.cookie"
  echo '[].' >"$base/rabbit/enabled_plugins"
  echo '# Written by scripts/cluster.sh: the nodes take their settings from the environment.' >"$base/rabbit/rabbitmq-env.conf"
  local n d
  for n in 1 2 3; do
    d="$(node_dir "$n")"
    mkdir -p "$d/mnesia" "$d/log" "$d/conf.d" # conf.d: not the system's /etc/rabbitmq/conf.d
    cat >"$d/rabbitmq.conf" <<EOF
# Written by scripts/cluster.sh (chaos stack node $n).
listeners.tcp.1 = 127.0.0.1:${amqp_ports[$n]}
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.file.level = info
EOF
  done
}

# start_node N: launches node N in the background (its own session, so that neither our `timeout`
# nor a terminal hangup reaches it). Returns at once; the caller waits for the AMQP port.
start_node() {
  local n="$1" d envs
  d="$(node_dir "$n")"
  if port_open "${amqp_ports[$n]}"; then
    die "127.0.0.1:${amqp_ports[$n]} is taken by another process: $(node_name "$n") cannot start"
  fi
  rm -f "$d/beam.pid" "$d/launcher.pid"
  mapfile -t envs < <(rmq_env "$n")
  # Many open files (see services.sh: quorum queues and the file handle cache).
  (cd "$d" && { ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; } &&
    exec setsid env "${envs[@]}" "$rmq_sbin/rabbitmq-server") >>"$d/startup.log" 2>&1 </dev/null 9>&- &
  echo "$!" >"$d/launcher.pid"
}

# running_nodes N: the running members of the cluster as node N sees them, one per line.
running_nodes() {
  ctl "$1" 30 eval 'rabbit_nodes:all_running().' 2>/dev/null | tr -d "[]' \n" | tr ',' '\n' | grep -v '^$' | sort
}

# members N: the (disc) members of the cluster as node N sees them, one per line.
members() {
  ctl "$1" 30 eval 'rabbit_nodes:all().' 2>/dev/null | tr -d "[]' \n" | tr ',' '\n' | grep -v '^$' | sort
}

# is_member N: node N is a member of c1's cluster (as c1 sees it).
is_member() {
  local list
  list="$(members 1 || true)"
  grep -qxF "$(node_name "$1")" <<<"$list"
}

# wait_port PORT DEADLINE
wait_port() {
  until port_open "$1"; do
    [ "$SECONDS" -lt "$2" ] || return 1
    sleep 0.3
  done
}

# wait_node_up N DEADLINE: node N's VM alive and its AMQP port accepting. Fails at once when the VM
# died (boot failure), pointing at its logs.
wait_node_up() {
  local n="$1" deadline="$2"
  until port_open "${amqp_ports[$n]}" && node_alive "$n"; do
    if ! node_alive "$n"; then
      sleep 1 # the VM may be between the launcher and its pid file
      if ! node_alive "$n" && ! port_open "${amqp_ports[$n]}"; then
        echo "cluster: $(node_name "$n") exited while starting; see $(node_dir "$n")/startup.log and $(node_dir "$n")/log" >&2
        tail -n 15 "$(node_dir "$n")/startup.log" 2>/dev/null | sed 's/^/  | /' >&2 || true
        return 1
      fi
    fi
    [ "$SECONDS" -lt "$deadline" ] || {
      echo "cluster: $(node_name "$n") did not open 127.0.0.1:${amqp_ports[$n]} in time" >&2
      return 1
    }
    sleep 0.3
  done
}

# app_stopped N: node N's VM answers and RabbitMQ in it is neither running nor booting (stop_app).
app_stopped() {
  [ "$(ctl "$1" 30 eval '{rabbit:is_booting(), rabbit:is_running()}.' 2>/dev/null || true)" = '{false,false}' ]
}

# join N DEADLINE: makes node N (app running, not a member) a member of c1's cluster.
join() {
  local n="$1" deadline="$2" c1
  c1="$(node_name 1)"
  local log="$base/rabbit/join.log" step
  # join_cluster logs harmless feature-flag warnings and errors from the joining node: kept in the log.
  for step in stop_app reset "join_cluster $c1" start_app; do
    echo "== $(node_name "$n"): $step" >>"$log"
    # shellcheck disable=SC2086 # "join_cluster NODE" is two arguments
    if ! ctl "$n" "$(remaining "$deadline")" $step >>"$log" 2>&1; then
      echo "cluster: rabbitmqctl -n $(node_name "$n") $step failed; last lines of $log:" >&2
      tail -n 20 "$log" | sed 's/^/  | /' >&2
      return 1
    fi
  done
}

# wait_cluster N DEADLINE: waits until node N sees every node whose AMQP port accepts as running.
wait_cluster() {
  local n="$1" deadline="$2" want got m
  while :; do
    want=''
    for m in 1 2 3; do
      port_open "${amqp_ports[$m]}" && want+="$(node_name "$m")"$'\n'
    done
    want="$(printf '%s' "$want" | sort)"
    got="$(running_nodes "$n" || true)"
    [ -n "$got" ] && [ "$got" = "$want" ] && return 0
    if ! node_alive "$n"; then
      echo "cluster: $(node_name "$n") is not running (see $(node_dir "$n")/log)" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "cluster: $(node_name "$n") sees running [$(echo "$got" | paste -sd,)], expected [$(echo "$want" | paste -sd,)]" >&2
      return 1
    fi
    sleep 1
  done
}

# --- PostgreSQL ------------------------------------------------------------------------------------

pg_data="$base/pg/data"
pg_log="$base/pg/postgres.log"

as_pg() {
  if [ "$is_root" = 1 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -t 2 >/dev/null 2>&1; }

pg_pid() {
  local pid
  pid="$(head -n 1 "$pg_data/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$pg_data" || return 1
  echo "$pid"
}

pg_init() {
  [ -f "$pg_data/PG_VERSION" ] && return 0
  mkdir -p "$base/pg/run"
  rm -rf "$pg_data"
  mkdir -p "$pg_data"
  chmod 700 "$pg_data"
  if [ "$is_root" = 1 ]; then
    chown -R postgres: "$base/pg"
    runuser -u postgres -- test -x "$base/pg" ||
      die "the postgres user cannot reach $base (set AMEBO_CLUSTER_DIR to a directory under /tmp)"
  fi
  local socket_dir="$base/pg/run"
  [ "${#socket_dir}" -le 90 ] || socket_dir='' # a Unix socket path is limited to 107 bytes: TCP only
  as_pg timeout 60 "$pg_bin/initdb" -D "$pg_data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$base/pg/initdb.log" 2>&1 || {
    tail -n 20 "$base/pg/initdb.log" >&2
    die "initdb failed (see $base/pg/initdb.log)"
  }
  cat >>"$pg_data/postgresql.conf" <<EOF

# Written by scripts/cluster.sh: a disposable server on loopback.
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$socket_dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

pg_start() {
  pg_pid >/dev/null && return 0
  pg_init
  as_pg timeout 30 setsid "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_log" -W start </dev/null >/dev/null 2>&1 9>&- || {
    tail -n 20 "$pg_log" >&2 2>/dev/null || true
    die "pg_ctl start failed (see $pg_log)"
  }
}

wait_pg() {
  until pg_ready; do
    [ "$SECONDS" -lt "$1" ] || {
      echo "cluster: PostgreSQL did not accept on 127.0.0.1:$pg_port in time; last lines of $pg_log:" >&2
      tail -n 15 "$pg_log" 2>/dev/null | sed 's/^/  | /' >&2 || true
      return 1
    }
    sleep 0.2
  done
}

pg_stop_now() {
  pg_pid >/dev/null || return 0
  as_pg timeout 30 "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w -t 25 stop </dev/null >/dev/null 2>&1 || true
  local pid
  if pid="$(pg_pid)"; then
    kill -9 "$pid" 2>/dev/null || true
  fi
}

# --- Redis -----------------------------------------------------------------------------------------

redis_pidfile="$base/redis/redis.pid"

redis_ping() { [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; }

redis_pid() {
  local pid
  pid="$(cat "$redis_pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "redis-server.*:$redis_port" || return 1
  echo "$pid"
}

redis_start() {
  redis_pid >/dev/null && return 0
  mkdir -p "$base/redis"
  timeout 10 redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
    --dir "$base/redis" --pidfile "$redis_pidfile" --logfile "$base/redis/redis.log" </dev/null >/dev/null 2>&1 9>&- ||
    die "redis-server did not start (see $base/redis/redis.log)"
}

wait_redis() {
  until redis_ping; do
    [ "$SECONDS" -lt "$1" ] || {
      echo "cluster: Redis did not answer PING on 127.0.0.1:$redis_port in time" >&2
      return 1
    }
    sleep 0.1
  done
}

redis_stop() {
  local pid i
  pid="$(redis_pid)" || return 0
  timeout 5 redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# --- commands --------------------------------------------------------------------------------------

amqp_urls() {
  local n out=''
  for n in 1 2 3; do out+="${out:+,}amqp://guest:guest@127.0.0.1:${amqp_ports[$n]}"; done
  echo "$out"
}

cmd_urls() {
  echo "AMEBO_AMQP_URL=$(amqp_urls)"
  echo "AMEBO_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/amebo"
  echo "AMEBO_REDIS_URL=redis://127.0.0.1:$redis_port/0"
  echo "AMEBO_TEST_PG_URL=postgres://postgres@127.0.0.1:$pg_port"
  echo "AMEBO_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0"
}

prepare_base() {
  mkdir -p "$base"
  if [ ! -f "$marker" ]; then
    [ -z "$(ls -A "$base" 2>/dev/null)" ] || die "$base exists and is not a chaos stack directory (no $marker)"
    echo 'Created by scripts/cluster.sh; "bash scripts/cluster.sh down" removes this directory.' >"$marker"
  fi
  chmod 755 "$base"
}

cmd_up() {
  need_tools
  local t0 deadline n failed=0
  t0="$(now)"
  deadline=$((SECONDS + timeout_s))
  prepare_base
  write_rabbit_files
  declare -A note=()

  # Start everything that is down first, then wait: the nodes boot in parallel.
  if ! redis_ping; then
    redis_start
    note[redis]=started
  elif ! redis_pid >/dev/null; then
    die "127.0.0.1:$redis_port answers, but not with this stack's Redis (another process holds the port)"
  fi
  if ! pg_ready; then
    pg_start
    note[pg]=started
  elif ! pg_pid >/dev/null; then
    die "127.0.0.1:$pg_port answers, but not with this stack's PostgreSQL (another process holds the port)"
  fi
  local stopped_app=()
  for n in 1 2 3; do
    if ! node_alive "$n"; then
      start_node "$n"
      note[c$n]=started
    elif ! port_open "${amqp_ports[$n]}"; then
      stopped_app+=("$n") # alive: booting, or its app was stopped (stop-app)
    fi
  done

  wait_redis "$deadline" || failed=1
  wait_pg "$deadline" || failed=1
  for n in "${stopped_app[@]}"; do
    if app_stopped "$n"; then
      ctl "$n" "$(remaining "$deadline")" start_app >/dev/null || true
      note[c$n]='app started'
    fi
  done
  for n in 1 2 3; do
    wait_node_up "$n" "$deadline" || failed=1
  done
  [ "$failed" = 0 ] || exit 1

  for n in 2 3; do
    if ! is_member "$n"; then
      join "$n" "$deadline" || die "$(node_name "$n") could not join $(node_name 1)"
      note[c$n]="${note[c$n]:-up}, joined"
    fi
  done
  for n in 1 2 3; do wait_node_up "$n" "$deadline" || exit 1; done
  wait_cluster 1 "$deadline" || exit 1

  local running
  running="$(running_nodes 1 | paste -sd, -)"
  for n in 1 2 3; do
    echo "rabbitmq $(node_name "$n"): up at amqp://127.0.0.1:${amqp_ports[$n]}${note[c$n]:+ (${note[c$n]})}"
  done
  echo "rabbitmq cluster: 3 running nodes [$running]"
  echo "postgresql: up at postgres://postgres@127.0.0.1:$pg_port${note[pg]:+ (${note[pg]})}"
  echo "redis: up at redis://127.0.0.1:$redis_port/0${note[redis]:+ (${note[redis]})}"
  echo "up in $(elapsed "$t0") s (base $base)"
}

cmd_down() {
  if [ ! -d "$base" ]; then
    echo "down: nothing at $base"
    return 0
  fi
  [ -f "$marker" ] || die "$base is not a chaos stack directory (no $marker); not touching it"
  local n f pid pids=() i nodes=0
  for n in 1 2 3; do
    node_alive "$n" && nodes=$((nodes + 1))
    # SIGTERM makes the VM stop RabbitMQ in order; the data is discarded anyway.
    for f in beam.pid launcher.pid; do
      pid="$(cat "$(node_dir "$n")/$f" 2>/dev/null || true)"
      [[ "$pid" =~ ^[0-9]+$ ]] || continue
      if pid_alive "$pid" && tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "RABBITMQ_NODENAME=$(node_name "$n")"; then
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
      fi
    done
  done
  pg_stop_now
  redis_stop
  for ((i = 0; i < 100; i++)); do # up to 20 s for a graceful stop, then SIGKILL
    local alive=0
    for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    if pid_alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  for ((i = 0; i < 25; i++)); do
    local alive=0
    for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  rm -rf "$base"
  echo "down: stopped $nodes RabbitMQ node(s), PostgreSQL and Redis; removed $base"
}

cmd_status() {
  local n pid bad=0 any=''
  if [ ! -f "$marker" ]; then
    echo "status: no chaos stack at $base"
    return 3
  fi
  for n in 1 2 3; do
    if pid="$(beam_pid "$n")"; then
      if port_open "${amqp_ports[$n]}"; then
        echo "rabbitmq $(node_name "$n"): running, amqp://127.0.0.1:${amqp_ports[$n]} (pid $pid)"
        [ -n "$any" ] || any="$n"
      else
        echo "rabbitmq $(node_name "$n"): VM up but AMQP closed (booting, or app stopped) (pid $pid)"
        bad=1
      fi
    else
      echo "rabbitmq $(node_name "$n"): down"
      bad=1
    fi
  done
  if [ -n "$any" ]; then
    local running
    running="$(running_nodes "$any" | paste -sd, - || true)"
    echo "rabbitmq cluster: running [$running] (as $(node_name "$any") sees it)"
  fi
  if pg_ready; then
    echo "postgresql: up at postgres://postgres@127.0.0.1:$pg_port (pid $(pg_pid || echo '?'))"
  else
    echo "postgresql: down"
    bad=1
  fi
  if redis_ping; then
    echo "redis: up at redis://127.0.0.1:$redis_port/0 (pid $(redis_pid || echo '?'))"
  else
    echo "redis: down"
    bad=1
  fi
  [ "$bad" = 0 ] || return 3
}

node_arg() {
  [[ "${1:-}" =~ ^[123]$ ]] || die "expected a node number 1, 2 or 3, got '${1:-}'"
  [ -f "$marker" ] || die "no chaos stack at $base (run: bash scripts/cluster.sh up)"
}

cmd_kill_node() {
  local n="$1" pid i
  pid="$(beam_pid "$n" || true)"
  if [ -z "$pid" ] || [ "$pid" = "$(cat "$(node_dir "$n")/launcher.pid" 2>/dev/null)" ]; then
    # No pid file yet (or a stale one): ask the VM itself.
    pid="$(ctl "$n" 15 eval 'os:getpid().' 2>/dev/null | tr -dc '0-9' || true)"
  fi
  if [ -z "$pid" ] || ! pid_alive "$pid"; then
    echo "kill-node: $(node_name "$n") is not running"
    return 0
  fi
  kill -9 "$pid"
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  for ((i = 0; i < 50; i++)); do
    port_open "${amqp_ports[$n]}" || break
    sleep 0.1
  done
  echo "kill-node: killed $(node_name "$n") (pid $pid)"
}

cmd_start_node() {
  local n="$1" deadline t0
  t0="$(now)"
  deadline=$((SECONDS + timeout_s))
  need_tools
  write_rabbit_files
  if ! node_alive "$n"; then
    start_node "$n"
  elif ! port_open "${amqp_ports[$n]}" && app_stopped "$n"; then
    ctl "$n" "$(remaining "$deadline")" start_app >/dev/null
  fi
  wait_node_up "$n" "$deadline" || exit 1
  # A node that lost its data (or never joined) joins c1 again, when c1 is there to join.
  if [ "$n" != 1 ] && port_open "${amqp_ports[1]}" && ! is_member "$n"; then
    join "$n" "$deadline"
    wait_node_up "$n" "$deadline" || exit 1
  fi
  wait_cluster "$n" "$deadline" || exit 1
  echo "start-node: $(node_name "$n") running at amqp://127.0.0.1:${amqp_ports[$n]}, cluster running [$(running_nodes "$n" | paste -sd, -)] ($(elapsed "$t0") s)"
}

cmd_stop_app() {
  local n="$1"
  ctl "$n" 60 stop_app >/dev/null
  echo "stop-app: $(node_name "$n") app stopped (VM up, AMQP 127.0.0.1:${amqp_ports[$n]} closed)"
}

cmd_start_app() {
  local n="$1" deadline=$((SECONDS + timeout_s))
  ctl "$n" "$timeout_s" start_app >/dev/null
  wait_node_up "$n" "$deadline" || exit 1
  echo "start-app: $(node_name "$n") app running at amqp://127.0.0.1:${amqp_ports[$n]}"
}

cmd_pg_stop() {
  [ -f "$marker" ] || die "no chaos stack at $base"
  pg_stop_now
  echo "pg-stop: PostgreSQL on 127.0.0.1:$pg_port stopped (immediate)"
}

cmd_pg_start() {
  [ -f "$marker" ] || die "no chaos stack at $base (run: bash scripts/cluster.sh up)"
  local t0 deadline=$((SECONDS + timeout_s))
  t0="$(now)"
  pg_start
  wait_pg "$deadline" || exit 1
  echo "pg-start: PostgreSQL up at postgres://postgres@127.0.0.1:$pg_port ($(elapsed "$t0") s)"
}

cmd_redis_restart() {
  [ -f "$marker" ] || die "no chaos stack at $base (run: bash scripts/cluster.sh up)"
  local t0 deadline=$((SECONDS + 30))
  t0="$(now)"
  redis_stop
  redis_start
  wait_redis "$deadline" || exit 1
  echo "redis-restart: Redis up again (empty) at redis://127.0.0.1:$redis_port/0 ($(elapsed "$t0") s)"
}

# --- main ------------------------------------------------------------------------------------------

# with_lock CMD...: one mutating command at a time per base directory. Daemons are started with fd 9
# closed, so the lock is released when this script exits.
with_lock() {
  if command -v flock >/dev/null 2>&1; then
    mkdir -p "$(dirname "$base")"
    exec 9>"$base.lock"
    flock -w "$((timeout_s + 30))" 9 || die "another scripts/cluster.sh holds $base.lock"
  fi
  "$@"
}

cmd="${1:-}"
case "$cmd" in
  up) with_lock cmd_up ;;
  down) with_lock cmd_down ;;
  status) cmd_status ;;
  urls) cmd_urls ;;
  kill-node) node_arg "${2:-}" && with_lock cmd_kill_node "$2" ;;
  start-node) node_arg "${2:-}" && with_lock cmd_start_node "$2" ;;
  stop-app) node_arg "${2:-}" && with_lock cmd_stop_app "$2" ;;
  start-app) node_arg "${2:-}" && with_lock cmd_start_app "$2" ;;
  pg-stop) with_lock cmd_pg_stop ;;
  pg-start) with_lock cmd_pg_start ;;
  redis-restart) with_lock cmd_redis_restart ;;
  -h | --help | help)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    echo "cluster.sh: unknown command '${cmd}' (try --help)" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Starts and stops the real services the tests use (Redis, etcd, PostgreSQL)
# on loopback, in a state directory, for `make test`, `make testenv-start`
# and .ci/run. Kafka is not here: tests start an in-process broker.
#
#   scripts/testenv.sh start    start what is installed, wait until healthy,
#                               write $STATE/env (HUBUIM_TEST_* exports)
#   scripts/testenv.sh stop     stop what start started (by pid), drop data
#   scripts/testenv.sh status   exit 0 if an env file exists and every
#                               service in it answers
#   scripts/testenv.sh env      print the env file (eval-able)
#
# A service whose binaries are missing is left out with a one-line note: its
# tests skip locally and fail in CI (internal/testenv). Ports default to
# non-standard ones so that a developer's own servers are not disturbed;
# a busy port is skipped for the next free one (HUBUIM_TESTENV_PORT_TRIES).
#
# Settings (environment):
#   HUBUIM_TESTENV_DIR          state dir (default: <repo>/.testenv)
#   HUBUIM_TESTENV_REDIS_PORT   default 26379
#   HUBUIM_TESTENV_ETCD_PORT    client port, default 22379 (peer +1, metrics +2)
#   HUBUIM_TESTENV_PG_PORT      default 25432
#   HUBUIM_TESTENV_TIMEOUT      seconds to wait for health, default 60
#   HUBUIM_TESTENV_PORT_TRIES   ports tried per service, default 10
#   HUBUIM_TESTENV_SERVICES     which to start, default "redis etcd postgres"
#   HUBUIM_TESTENV_OWNER        recorded in $STATE/owner: "manual" (default,
#                               make testenv-start) or "test" (scripts/test.sh)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${HUBUIM_TESTENV_DIR:-$repo/.testenv}"
ENV_FILE="$STATE/env"
REDIS_PORT="${HUBUIM_TESTENV_REDIS_PORT:-26379}"
ETCD_PORT="${HUBUIM_TESTENV_ETCD_PORT:-22379}"
PG_PORT="${HUBUIM_TESTENV_PG_PORT:-25432}"
TIMEOUT="${HUBUIM_TESTENV_TIMEOUT:-60}"
PORT_TRIES="${HUBUIM_TESTENV_PORT_TRIES:-10}"
SERVICES=" ${HUBUIM_TESTENV_SERVICES-redis etcd postgres} "
# Ports are stepped by this much when busy (etcd needs three in a row).
PORT_STEP=10
HOST=127.0.0.1

log() { printf 'testenv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# port_busy PORT: something accepts connections on HOST:PORT.
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# free_port BASE WIDTH: first BASE + k*PORT_STEP with WIDTH free ports.
free_port() {
  local base=$1 width=$2 try p ok
  for ((try = 0; try < PORT_TRIES; try++)); do
    p=$((base + try * PORT_STEP))
    ok=1
    for ((i = 0; i < width; i++)); do
      if port_busy $((p + i)); then ok=0; break; fi
    done
    if ((ok)); then
      ((try == 0)) || log "port $base busy, using $p"
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Starts per service when a port is taken between the check and the start.
START_TRIES=3

# with_port BASE WIDTH NAME FUNC: run FUNC PORT on the first free ports from
# BASE; when FUNC fails because another process took the port meanwhile
# (several test runs on one machine), try the next free ones.
with_port() {
  local base=$1 width=$2 name=$3 fn=$4 port attempt
  for ((attempt = 0; attempt < START_TRIES; attempt++)); do
    port=$(free_port "$base" "$width") || die "no free port for $name from $base"
    if "$fn" "$port"; then return 0; fi
    local taken=0 i
    for ((i = 0; i < width; i++)); do port_busy $((port + i)) && taken=1; done
    if ((!taken)); then
      log "$name failed to start on $port"
      return 1
    fi
    log "$name: port $port was taken meanwhile, trying the next"
    base=$((port + PORT_STEP))
  done
  log "$name: gave up after $START_TRIES ports"
  return 1
}

# wait_for DESC PIDFILE NAME CMD...: poll CMD until it succeeds, the
# process in PIDFILE dies (PIDFILE "-": no such check) or TIMEOUT passes.
wait_for() {
  local desc=$1 pidfile=$2 name=$3
  shift 3
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [ "$pidfile" != - ] && ! alive "$pidfile" "$name"; then
      log "$desc exited during start"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$desc not healthy after ${TIMEOUT}s"
      return 1
    fi
    sleep 0.2
  done
}

# alive PIDFILE NAME: the pid in PIDFILE runs a process whose command line
# mentions NAME (so a reused pid is never signalled) or, just after
# `cmd &`, is still this script's fork that has not exec'd NAME yet.
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/cmdline" ] || { kill -0 "$pid" 2>/dev/null; return; }
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE -- "$2|testenv\.sh"
}

# stop_pid PIDFILE NAME: TERM, wait, then KILL the process started by us.
stop_pid() {
  local pidfile=$1 name=$2 pid deadline
  if ! alive "$pidfile" "$name"; then rm -f "$pidfile"; return 0; fi
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) ignored TERM, killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# owns_port PIDFILE PORT: the process in PIDFILE is the one listening on
# PORT. Without it, a server that failed to bind would look healthy while
# another run's server answers on the same port.
owns_port() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$pid,"
  else
    kill -0 "$pid" 2>/dev/null # best effort without iproute2
  fi
}

# ---------------------------------------------------------------- redis --

# Probes run in subshells so that their descriptor closes with them.
redis_ping() (
  exec 3<>"/dev/tcp/$HOST/$1" || exit 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || true
  [[ "$reply" == +PONG* ]]
)

redis_up() { redis_ping "$1" && owns_port "$STATE/redis.pid" "$1"; }

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "redis-server not installed: Redis tests will skip (fail in CI)"
    return 0
  fi
  with_port "$REDIS_PORT" 1 redis redis_on
}

# redis_on PORT: start redis on PORT; fails if it does not come up.
redis_on() {
  local port=$1
  rm -rf "$STATE/redis"
  mkdir -p "$STATE/redis"
  # In the foreground of a background job, so that $! is its pid and a
  # failed bind shows at once. stdio detached: a daemon must not hold the
  # caller's pipes open (a CI runner would wait for it).
  nohup redis-server --port "$port" --bind "$HOST" --save "" --appendonly no \
    --dir "$STATE/redis" --daemonize no --logfile "$STATE/redis.log" \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$STATE/redis.pid"
  if ! wait_for "redis on $port" "$STATE/redis.pid" redis-server redis_up "$port"; then
    tail -n 5 "$STATE/redis.log" >&2 || true
    stop_pid "$STATE/redis.pid" redis-server
    return 1
  fi
  echo "$port" >"$STATE/redis.port"
  echo "export HUBUIM_TEST_REDIS_ADDR=$HOST:$port" >>"$ENV_FILE.tmp"
  log "redis ready on $HOST:$port"
}

stop_redis() {
  stop_pid "$STATE/redis.pid" redis-server
  rm -rf "$STATE/redis" "$STATE/redis.port"
}

# ----------------------------------------------------------------- etcd --

etcd_health() (
  exec 3<>"/dev/tcp/$HOST/$1" || exit 1
  printf 'GET /health HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&3
  body=$(timeout 2 cat <&3 || true)
  [[ "$body" == *'"health":"true"'* ]]
)

etcd_up() { etcd_health "$1" && owns_port "$STATE/etcd.pid" "$1"; }

start_etcd() {
  if ! command -v etcd >/dev/null 2>&1; then
    log "etcd not installed: etcd tests will skip (fail in CI)"
    return 0
  fi
  with_port "$ETCD_PORT" 3 etcd etcd_on
}

# etcd_on PORT: start etcd with client PORT, peer PORT+1, metrics PORT+2.
etcd_on() {
  local port=$1
  rm -rf "$STATE/etcd"
  mkdir -p "$STATE/etcd"
  local c="http://$HOST:$port" p="http://$HOST:$((port + 1))" m="http://$HOST:$((port + 2))"
  nohup etcd --name hubuim-test --data-dir "$STATE/etcd" \
    --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
    --initial-cluster "hubuim-test=$p" --listen-metrics-urls "$m" \
    </dev/null >"$STATE/etcd.log" 2>&1 &
  echo $! >"$STATE/etcd.pid"
  if ! wait_for "etcd on $port" "$STATE/etcd.pid" etcd etcd_up "$port"; then
    tail -n 5 "$STATE/etcd.log" >&2 || true
    stop_pid "$STATE/etcd.pid" etcd
    return 1
  fi
  echo "$port" >"$STATE/etcd.port"
  echo "export HUBUIM_TEST_ETCD_ENDPOINTS=$HOST:$port" >>"$ENV_FILE.tmp"
  log "etcd ready on $HOST:$port"
}

stop_etcd() {
  stop_pid "$STATE/etcd.pid" etcd
  rm -rf "$STATE/etcd" "$STATE/etcd.port"
}

# ----------------------------------------------------------- postgresql --

pg_bindir() {
  local d
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
    return 0
  fi
  # The newest installed major version.
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

# as_pg CMD: run CMD (a shell string) as the PostgreSQL owner. initdb
# refuses root, so as root this is the postgres user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/sh -c "$1"
  else
    sh -c "$1"
  fi
}

pg_ready() { port_busy "$1"; }

start_pg() {
  local bin port dir
  if ! bin=$(pg_bindir); then
    log "PostgreSQL (initdb, pg_ctl) not installed: PostgreSQL tests will skip (fail in CI)"
    return 0
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root without a postgres user: PostgreSQL tests will skip (fail in CI)"
    return 0
  fi
  dir="$STATE/pg"
  rm -rf "$dir"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    # The postgres user must reach the directory; a repo under a private
    # home is not reachable, so fall back to a private dir in /tmp.
    if ! su postgres -s /bin/sh -c "test -w '$dir'" 2>/dev/null; then
      rm -rf "$dir"
      dir=$(mktemp -d /tmp/hubuim-testenv-pg.XXXXXX)
      chown postgres "$dir"
    fi
  fi
  echo "$dir" >"$STATE/pg.dir"
  as_pg "'$bin/initdb' -D '$dir/data' -A trust -U postgres --no-sync >'$dir/initdb.log' 2>&1" ||
    { tail -n 5 "$dir/initdb.log" >&2 || true; die "initdb failed"; }
  PG_BIN=$bin PG_DIR=$dir with_port "$PG_PORT" 1 postgresql pg_on
}

# pg_on PORT: start the initialized cluster in PG_DIR on PORT.
pg_on() {
  local port=$1
  # No Unix socket: its path length is limited and loopback TCP is all the
  # tests use. fsync off: test data never needs to survive a crash.
  if ! as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/log' -w -t '$TIMEOUT' start \
    -o \"-p $port -c listen_addresses=$HOST -c unix_socket_directories='' -c fsync=off -c full_page_writes=off\" >/dev/null"; then
    tail -n 5 "$PG_DIR/log" >&2 || true
    return 1
  fi
  wait_for "postgresql on $port" - - pg_ready "$port" || return 1
  echo "$port" >"$STATE/pg.port"
  echo "export HUBUIM_TEST_POSTGRES_DSN='postgres://postgres@$HOST:$port/postgres?sslmode=disable'" >>"$ENV_FILE.tmp"
  log "postgresql ready on $HOST:$port"
}

stop_pg() {
  local dir bin
  [ -s "$STATE/pg.dir" ] || return 0
  dir=$(cat "$STATE/pg.dir")
  if [ -f "$dir/data/postmaster.pid" ] && bin=$(pg_bindir); then
    as_pg "'$bin/pg_ctl' -D '$dir/data' -w -t '$TIMEOUT' stop -m fast >/dev/null" ||
      log "pg_ctl stop failed (see $dir/log)"
  fi
  # Keep the server log for a failed run; drop the data.
  if [ -f "$dir/log" ]; then cp "$dir/log" "$STATE/pg.log" 2>/dev/null || true; fi
  rm -rf "$dir" "$STATE/pg.dir" "$STATE/pg.port"
}

# ---------------------------------------------------------------- main ---

# want NAME FUNC: run FUNC if NAME is in HUBUIM_TESTENV_SERVICES.
want() {
  if [[ "$SERVICES" == *" $1 "* ]]; then
    "$2"
  else
    log "$1 not requested (HUBUIM_TESTENV_SERVICES): its tests will skip (fail in CI)"
  fi
}

cmd_stop() {
  [ -d "$STATE" ] || return 0
  stop_pg
  stop_etcd
  stop_redis
  rm -f "$ENV_FILE" "$ENV_FILE.tmp" "$STATE/owner"
}

cmd_status() {
  [ -s "$ENV_FILE" ] || return 1
  if [ -s "$STATE/redis.port" ]; then redis_ping "$(cat "$STATE/redis.port")" || return 1; fi
  if [ -s "$STATE/etcd.port" ]; then etcd_health "$(cat "$STATE/etcd.port")" || return 1; fi
  if [ -s "$STATE/pg.port" ]; then pg_ready "$(cat "$STATE/pg.port")" || return 1; fi
  return 0
}

cmd_start() {
  if cmd_status 2>/dev/null; then
    log "already running (scripts/testenv.sh stop to stop it)"
    return 0
  fi
  cmd_stop # leftovers of an interrupted run
  mkdir -p "$STATE"
  : >"$ENV_FILE.tmp"
  echo "# written by scripts/testenv.sh start; source it before go test" >>"$ENV_FILE.tmp"
  # Start all, stop all on any failure: never leave half an environment.
  if ! (want redis start_redis && want etcd start_etcd && want postgres start_pg); then
    log "start failed; stopping what was started"
    cmd_stop
    exit 1
  fi
  echo "${HUBUIM_TESTENV_OWNER:-manual}" >"$STATE/owner"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env)
  [ -s "$ENV_FILE" ] || die "not started (scripts/testenv.sh start)"
  cat "$ENV_FILE"
  ;;
*)
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
  ;;
esac

#!/usr/bin/env bash
# bench-cluster.sh: run HubuIM in distributed mode on this machine for
# imbench (docs/benchmarks.md): a kfake Kafka-protocol broker (imbench kafka),
# logic, job and one comet, against the Redis, etcd and PostgreSQL given in
# HUBUIM_TEST_REDIS_ADDR, HUBUIM_TEST_ETCD_ENDPOINTS and
# HUBUIM_TEST_POSTGRES_DSN, with a private Redis key prefix, etcd prefix and
# PostgreSQL schema. Insecure auth and an unauthenticated push API:
# benchmarks only.
#
# Usage: scripts/bench-cluster.sh [seconds]   (default 600; Ctrl-C stops)
# Env: BENCH_KAFKA_PORT (19092), BENCH_PG_MAX_CONNS (logic's pool size),
# BENCH_PORT_BASE (5100: several clusters can run side by side),
# BENCH_GOMAXPROCS (1: each service and the broker get GOMAXPROCS=1, like a
# pod with a 1-CPU limit; 0 keeps Go's default of one per core),
# BENCH_LOGIC_YAML (extra lines appended to logic's YAML, e.g.
# "im: {append_concurrency: 2}"), BENCH_KEEP_DATA (set: keep the run's
# Redis keys and PostgreSQL schema; by default they are removed at exit
# when redis-cli and psql are installed).
# Listens on (with the default base): comet TCP 127.0.0.1:5101, WS
# :5102/sub, logic HTTP 127.0.0.1:5111, gRPC :5119; admin/metrics (with
# pprof) comet :5901, logic :5911, job :5921. Only the processes this
# script started are stopped.
set -euo pipefail

life=${1:-600}
redis=${HUBUIM_TEST_REDIS_ADDR:?set HUBUIM_TEST_REDIS_ADDR}
etcd=${HUBUIM_TEST_ETCD_ENDPOINTS:?set HUBUIM_TEST_ETCD_ENDPOINTS}
dsn=${HUBUIM_TEST_POSTGRES_DSN:?set HUBUIM_TEST_POSTGRES_DSN}
kafka_port=${BENCH_KAFKA_PORT:-19092}
b=${BENCH_PORT_BASE:-5100}
pg_conns=${BENCH_PG_MAX_CONNS:-0} # logic's postgres.max_conns (0: pgxpool's default)
# Five Go processes on a small machine, each with one P per core, spend a
# good part of the CPU spinning for work and switching; a pod in a cluster
# would have a CPU limit (and Go sets GOMAXPROCS from it).
procs=${BENCH_GOMAXPROCS:-1}
tag="imbench$$$RANDOM"
dir=$(mktemp -d)
root=$(cd "$(dirname "$0")/.." && pwd)

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	# The run's Redis keys (sessions, a dedup entry per message for 24 h)
	# and PostgreSQL schema would otherwise pile up run after run.
	if [ -z "${BENCH_KEEP_DATA:-}" ]; then
		if command -v redis-cli >/dev/null; then
			redis-cli -h "${redis%:*}" -p "${redis##*:}" --scan --pattern "$tag:*" |
				xargs -r -n 1000 redis-cli -h "${redis%:*}" -p "${redis##*:}" unlink >/dev/null || true
		fi
		if command -v psql >/dev/null; then
			psql "$dsn" -qc "DROP SCHEMA IF EXISTS \"$tag\" CASCADE" >/dev/null 2>&1 || true
		fi
	fi
	echo "logs kept in $dir"
}
trap cleanup EXIT INT TERM

(cd "$root" && go build -o "$dir/" ./cmd/logic ./cmd/comet ./cmd/job ./cmd/imbench)
# After the build: the services only.
if [ "$procs" != 0 ]; then export GOMAXPROCS=$procs; fi

cat >"$dir/logic.yaml" <<YAML
id: bench-logic
http_addr: "127.0.0.1:$((b + 11))"
grpc_addr: "127.0.0.1:$((b + 19))"
advertise_host: "127.0.0.1"
admin: {addr: "127.0.0.1:$((b + 811))", pprof: true}
redis: {addrs: ["$redis"], prefix: "$tag:"}
postgres: {dsn: "$dsn", schema: "$tag", max_conns: $pg_conns}
auth: {mode: insecure}
kafka: {brokers: ["127.0.0.1:$kafka_port"]}
discovery: {endpoints: ["$etcd"], prefix: "/$tag/discovery"}
idgen: {prefix: "/$tag"}
push: {unauthenticated: true}
${BENCH_LOGIC_YAML:-}
YAML
cat >"$dir/comet.yaml" <<YAML
id: bench-comet
tcp_addr: "127.0.0.1:$((b + 1))"
ws_addr: "127.0.0.1:$((b + 2))"
grpc_addr: "127.0.0.1:$((b + 9))"
advertise_host: "127.0.0.1"
logic_target: "127.0.0.1:$((b + 19))"
discovery: {endpoints: ["$etcd"], prefix: "/$tag/discovery"}
admin: {addr: "127.0.0.1:$((b + 801))", pprof: true}
YAML
cat >"$dir/job.yaml" <<YAML
group: "$tag-job"
kafka: {brokers: ["127.0.0.1:$kafka_port"]}
discovery: {type: etcd, etcd: {endpoints: ["$etcd"], prefix: "/$tag/discovery"}}
redis: {addrs: ["$redis"], prefix: "$tag:"}
postgres: {dsn: "$dsn", schema: "$tag"}
admin: {addr: "127.0.0.1:$((b + 821))", pprof: true}
YAML

"$dir/imbench" kafka -port "$kafka_port" -for "${life}s" >"$dir/kafka.log" 2>&1 &
pids+=($!)
sleep 1
"$dir/logic" -config "$dir/logic.yaml" >"$dir/logic.log" 2>&1 &
pids+=($!)
sleep 2
"$dir/job" -config "$dir/job.yaml" >"$dir/job.log" 2>&1 &
pids+=($!)
"$dir/comet" -config "$dir/comet.yaml" >"$dir/comet.log" 2>&1 &
pids+=($!)
echo "GOMAXPROCS=${GOMAXPROCS:-default} kafka=${pids[0]} logic=${pids[1]} job=${pids[2]} comet=${pids[3]} dir=$dir tag=$tag"
echo "imbench flags: -addr 127.0.0.1:$((b + 1)) -ws-addr 127.0.0.1:$((b + 2)) -http http://127.0.0.1:$((b + 11)) -grpc 127.0.0.1:$((b + 19))"
sleep "$life" &
pids+=($!)
wait "${pids[-1]}"

#!/usr/bin/env bash
# `make test`: starts the test services that are installed
# (scripts/testenv.sh), runs the Go tests with the race detector (when cgo
# works) against them, stops what it started (also on failure or interrupt)
# and exits with go test's status.
#
# A test environment started by `make testenv-start` is reused and left
# running; otherwise the run gets its own in .testenv/run-<pid> (service and
# go test logs stay there; the next run removes them).
#
# With the default PKGS=./..., every Go module of the repository is tested
# (the root one, then e.g. deploy/); an explicit PKGS is resolved from the
# root module only.
#
# Settings: PKGS (default ./...), TESTFLAGS (extra go test flags, e.g.
# "-run TestX -v"), TEST_TIMEOUT (default 20m).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

PKGS="${PKGS:-./...}"
TEST_TIMEOUT="${TEST_TIMEOUT:-20m}"
BASE="${HUBUIM_TESTENV_DIR:-$PWD/.testenv}"

# Services from `make testenv-start` are reused and left running. Otherwise
# this run starts its own in a private state dir (several runs can share a
# tree: busy ports move on) and stops them on every exit path.
if HUBUIM_TESTENV_DIR="$BASE" scripts/testenv.sh status 2>/dev/null &&
  [ "$(cat "$BASE/owner" 2>/dev/null)" = manual ]; then
  STATE="$BASE"
  echo "test: using the running test environment ($STATE/env)"
else
  # Leftovers of runs that were killed without cleaning up.
  for d in "$BASE"/run-*; do
    [ -d "$d" ] || continue
    kill -0 "${d##*/run-}" 2>/dev/null && continue
    HUBUIM_TESTENV_DIR="$d" scripts/testenv.sh stop || true
    rm -rf "$d"
  done
  STATE="$BASE/run-$$"
  export HUBUIM_TESTENV_DIR="$STATE" HUBUIM_TESTENV_OWNER=test
  trap 'scripts/testenv.sh stop || true' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  scripts/testenv.sh start
fi
if [ -s "$STATE/env" ]; then
  # shellcheck disable=SC1091
  . "$STATE/env"
fi
for v in HUBUIM_TEST_REDIS_ADDR HUBUIM_TEST_ETCD_ENDPOINTS HUBUIM_TEST_POSTGRES_DSN; do
  echo "test: $v=${!v:-<unset: those tests skip${CI:+, and FAIL because CI is set}>}"
done

# The race detector needs cgo, i.e. a C compiler. A machine with only Go
# still runs the tests, without -race; CI must have it.
race=-race
if [ "$(go env CGO_ENABLED)" != 1 ]; then
  if [ -n "${CI:-}" ]; then
    echo "test: the race detector needs cgo and a C compiler (apt-get install gcc); CI requires -race" >&2
    exit 1
  fi
  echo "test: no C compiler (cgo off): running WITHOUT -race; install gcc for race detection"
  race=
fi

mods=(.)
if [ "$PKGS" = ./... ]; then mapfile -t mods < <(go_modules); fi

log="$STATE/go-test.log"
mkdir -p "$STATE"
: >"$log"
rc=0
for m in "${mods[@]}"; do
  [ "$m" = . ] || echo "test: module $m/" | tee -a "$log"
  set +e
  # shellcheck disable=SC2086
  go -C "$m" test $race -count=1 -timeout "$TEST_TIMEOUT" ${TESTFLAGS:-} $PKGS 2>&1 | tee -a "$log"
  r=${PIPESTATUS[0]}
  set -e
  [ "$r" -eq 0 ] || rc=$r
done

# A short summary after go test's own closing lines.
ok=$(grep -c '^ok ' "$log" || true)
failpkgs=$(grep -cE '^FAIL[[:space:]]' "$log" || true)
failtests=$(grep -c -- '--- FAIL' "$log" || true)
notest=$(grep -c '^?.*\[no test files\]' "$log" || true)
echo "test: packages: $ok ok, $failpkgs FAIL, $notest without tests; $failtests failed tests; go test exit $rc"
exit "$rc"

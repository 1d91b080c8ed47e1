#!/usr/bin/env bash
# `make lint`: gofmt, go vet and, when installed, staticcheck. Every check
# runs even if an earlier one failed, so one run shows every problem.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
mapfile -t mods < <(go_modules)

rc=0
files=$(find . -name '*.go' -not -path './.git/*' -not -path './.testenv/*' -not -path './bin/*' -not -path '*/testdata/*')
# shellcheck disable=SC2086
unformatted=$(gofmt -l $files)
if [ -n "$unformatted" ]; then
  echo "lint: gofmt -l lists files to format (gofmt -w them):"
  while IFS= read -r f; do echo "  $f"; done <<<"$unformatted"
  rc=1
else
  echo "lint: gofmt ok"
fi

for m in "${mods[@]}"; do
  if go -C "$m" vet ./...; then echo "lint: go vet ok ($m)"; else echo "lint: go vet FAILED ($m)"; rc=1; fi
done

# STATICCHECK_INSTALL=1 (set by .ci/run) installs the pinned version into
# ./bin when it is not there.
STATICCHECK_VERSION=v0.8.2 # staticcheck 2026.2.2
sc=$(command -v staticcheck || true)
[ -n "$sc" ] || { [ -x bin/staticcheck ] && sc=bin/staticcheck; }
if [ -z "$sc" ] && [ "${STATICCHECK_INSTALL:-}" = 1 ]; then
  echo "lint: installing staticcheck $STATICCHECK_VERSION into ./bin"
  if GOBIN="$PWD/bin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"; then
    sc=bin/staticcheck
  else
    echo "lint: staticcheck install FAILED"
    rc=1
  fi
fi
if [ -n "$sc" ]; then
  sc=$(cd "$(dirname "$sc")" && pwd)/$(basename "$sc")
  for m in "${mods[@]}"; do
    if (cd "$m" && "$sc" ./...); then echo "lint: staticcheck ok ($m)"; else echo "lint: staticcheck FAILED ($m)"; rc=1; fi
  done
else
  echo "lint: staticcheck not installed, skipped (STATICCHECK_INSTALL=1 make lint installs it)"
fi
# Shell scripts, when shellcheck is installed (warnings and errors only).
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck -x -S warning scripts/*.sh .ci/run; then echo "lint: shellcheck ok"; else echo "lint: shellcheck FAILED"; rc=1; fi
else
  echo "lint: shellcheck not installed, skipped"
fi
exit "$rc"

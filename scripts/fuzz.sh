#!/usr/bin/env bash
# `make fuzz`: runs every Fuzz target of the module briefly, one after the
# other. Targets are discovered with `go test -list` in each package that
# has a `func Fuzz` in a _test.go file, so new targets run without editing
# this script.
#
# Settings: FUZZTIME per target (default 10s); FUZZ_BUDGET, a total for
# all targets (e.g. 90s) that overrides FUZZTIME by splitting it evenly
# (never below FUZZ_MIN, default 3s); FUZZ_DIRS, where to look (default .).
# A failing input is saved under the package's testdata/fuzz/ by go test.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

FUZZTIME="${FUZZTIME:-10s}"
FUZZ_MIN="${FUZZ_MIN:-3s}"
FUZZ_DIRS="${FUZZ_DIRS:-.}"

secs() { # 90s | 2m | 1m30s -> seconds (whole)
  local d=$1 total=0 n
  while [[ $d =~ ^([0-9]+)([hms])(.*)$ ]]; do
    n=${BASH_REMATCH[1]}
    case ${BASH_REMATCH[2]} in h) n=$((n * 3600)) ;; m) n=$((n * 60)) ;; esac
    total=$((total + n))
    d=${BASH_REMATCH[3]}
  done
  [ -z "$d" ] || { echo "fuzz: cannot parse duration $1" >&2; exit 2; }
  echo "$total"
}

targets=()
list_failed=()
# shellcheck disable=SC2086 # FUZZ_DIRS is a list
while IFS= read -r dir; do
  # Go commands run in the directory's own module (deploy/ is separate).
  mod=$(module_of "$dir")
  rel=${dir#"$mod"}
  rel=./${rel#/}
  out=$(go -C "$mod" test -list '^Fuzz' "$rel" 2>&1) || { echo "$out" >&2; list_failed+=("./$dir"); continue; }
  while IFS= read -r name; do
    [[ $name == Fuzz* ]] && targets+=("$mod $rel $name")
  done <<<"$out"
done < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Z0-9_]' $FUZZ_DIRS 2>/dev/null |
  grep -vE '(^|/)(\.git|\.testenv|bin|testdata)/' | xargs -r -n1 dirname | sed 's|^\./||' | sort -u)

if [ "${#targets[@]}" -eq 0 ] && [ "${#list_failed[@]}" -eq 0 ]; then
  echo "fuzz: no Fuzz targets found"
  exit 0
fi
per="$FUZZTIME"
if [ -n "${FUZZ_BUDGET:-}" ] && [ "${#targets[@]}" -gt 0 ]; then
  s=$(($(secs "$FUZZ_BUDGET") / ${#targets[@]}))
  min=$(secs "$FUZZ_MIN")
  ((s >= min)) || s=$min
  per="${s}s"
fi
echo "fuzz: ${#targets[@]} targets, $per each"

failed=()
for t in "${targets[@]}"; do
  read -r mod rel name <<<"$t"
  pkg="$mod/${rel#./}"
  echo "fuzz: ./${pkg#./} $name"
  for attempt in 1 2; do
    log=$(mktemp)
    if go -C "$mod" test -run '^$' -fuzz "^${name}\$" -fuzztime "$per" "$rel" 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
      rm -f "$log"
      break
    fi
    # The fuzzing engine sometimes ends a run that found nothing with
    # "context deadline exceeded" when -fuzztime runs out; a real finding
    # always writes its input under testdata/fuzz. Retry that once.
    if [ "$attempt" -eq 1 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
      echo "fuzz: $name ended with the engine's deadline error and no finding: retrying once"
      rm -f "$log"
      continue
    fi
    rm -f "$log"
    failed+=("./${pkg#./} $name")
    break
  done
done
failed+=("${list_failed[@]/%/ (does not build)}")
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'fuzz: FAILED %s\n' "${failed[@]}"
  exit 1
fi
echo "fuzz: all targets passed"

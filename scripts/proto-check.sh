#!/usr/bin/env bash
# `make proto-check`: regenerates the protobuf code into the tree and fails
# when it differs from what is there, so CI fails when the committed
# generated code is stale (a .proto changed without ./scripts/proto.sh) or
# a generated file is missing from git.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/proto.sh
stale=0
if ! git diff --exit-code --stat -- ':(glob)api/**/*.pb.go'; then
  echo "proto-check: generated code differs from the tree (diff above)." >&2
  stale=1
fi
untracked=$(git ls-files --others --exclude-standard -- ':(glob)api/**/*.pb.go')
if [ -n "$untracked" ]; then
  echo "proto-check: generated files not in git:" >&2
  echo "$untracked" >&2
  stale=1
fi
if [ "$stale" -ne 0 ]; then
  echo "proto-check: run ./scripts/proto.sh (make proto) and commit the result." >&2
  exit 1
fi
echo "proto-check: generated code is up to date"

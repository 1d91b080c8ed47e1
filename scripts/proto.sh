#!/usr/bin/env bash
# Regenerates the Go code for api/**/*.proto with pinned plugin versions.
# protoc itself comes from Debian's protobuf-compiler (3.21); the plugins are
# installed into ./bin so that the output does not depend on the user's PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

if ! command -v protoc >/dev/null 2>&1; then
  echo "protoc not found: apt-get install -y protobuf-compiler" >&2
  exit 1
fi
bin="$PWD/bin"
mkdir -p "$bin"
want_go="protoc-gen-go $PROTOC_GEN_GO_VERSION"
if [ "$("$bin/protoc-gen-go" --version 2>/dev/null)" != "$want_go" ]; then
  GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
want_grpc="protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}"
if [ "$("$bin/protoc-gen-go-grpc" --version 2>/dev/null)" != "$want_grpc" ]; then
  GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi

protos=$(cd api && find . -name '*.proto' | sed 's|^\./||' | sort)
(cd api && PATH="$bin:$PATH" protoc -I . \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  $protos)
echo "generated: $protos"

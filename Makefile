# HubuIM build, test and CI entry points. `make help` lists the targets.
# Long logic lives in scripts/ so that it can be read and run on its own.

SHELL := /usr/bin/env bash
GO ?= go

# Build flags shared with the (future) Dockerfiles: static, reproducible
# binaries without local paths.
BIN_DIR     ?= bin
CGO_ENABLED ?= 0
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     ?= -s -w -X main.version=$(VERSION)
BUILD_FLAGS ?= -trimpath -ldflags '$(LDFLAGS)'

# Standalone mode: one process with comet, logic and job.
RUN_PKG ?= ./cmd/hubuim
ARGS    ?=

# Tests: see scripts/test.sh. PKGS selects packages, TESTFLAGS adds flags.
PKGS      ?= ./...
TESTFLAGS ?=

# Benchmarks: make bench BENCH=Frame BENCHTIME=2s PKGS=./api/...
BENCH     ?= .
BENCHTIME ?= 1s

# Fuzzing: FUZZTIME per target, or FUZZ_BUDGET for all targets together.
FUZZTIME    ?= 10s
FUZZ_BUDGET ?=

.PHONY: help build run test bench proto proto-check lint fuzz testenv-start testenv-stop testenv-status clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

build: ## build every ./cmd/... binary into ./bin (static, -trimpath)
	@if ! ls cmd/*/*.go >/dev/null 2>&1; then echo "build: no ./cmd/... packages yet"; exit 0; fi; \
	mkdir -p $(BIN_DIR) && \
	CGO_ENABLED=$(CGO_ENABLED) $(GO) build $(BUILD_FLAGS) -o $(BIN_DIR)/ ./cmd/... && \
	echo "build: $$($(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./cmd/... | xargs -n1 basename | tr '\n' ' ')-> $(BIN_DIR)/"

run: ## run the standalone server (comet + logic + job in one process)
	$(GO) run $(RUN_PKG) $(ARGS)

test: ## run all tests with -race against real services (started if installed)
	@PKGS='$(PKGS)' TESTFLAGS='$(TESTFLAGS)' ./scripts/test.sh

bench: ## run benchmarks (BENCH=regexp BENCHTIME=1s PKGS=./...)
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -benchtime=$(BENCHTIME) $(PKGS)

proto: ## regenerate the protobuf code
	./scripts/proto.sh

proto-check: ## fail if the committed generated code is stale
	./scripts/proto-check.sh

lint: ## gofmt, go vet (and staticcheck when installed)
	@./scripts/lint.sh

fuzz: ## run every Fuzz target briefly (FUZZTIME=10s each, or FUZZ_BUDGET total)
	@FUZZTIME='$(FUZZTIME)' FUZZ_BUDGET='$(FUZZ_BUDGET)' ./scripts/fuzz.sh

testenv-start: ## start Redis, etcd, PostgreSQL for tests on loopback
	@./scripts/testenv.sh start && echo "testenv: for go test by hand: source .testenv/env" && cat .testenv/env

testenv-stop: ## stop what testenv-start started
	@./scripts/testenv.sh stop

testenv-status: ## exit 0 if the test environment is running
	@./scripts/testenv.sh status && cat .testenv/env

clean: ## remove built binaries (keeps the protoc plugins in ./bin)
	@for d in cmd/*/; do rm -f $(BIN_DIR)/$$(basename $$d); done

# --- deploy (deploy/, docs/deploy.md) ---------------------------------------
# deploy/ is its own Go module (Kubernetes and kustomize stay out of go.mod).
IMAGE_REPO ?= hubuim
IMAGE_TAG  ?= $(VERSION)
SERVICES   ?= comet logic job

.PHONY: deploy-check images

deploy-check: ## render deploy/overlays/* and validate them, offline
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 $(TESTFLAGS) ./...

images: ## docker build one image per service (IMAGE_REPO, IMAGE_TAG)
	@for s in $(SERVICES); do \
	  docker build -f deploy/docker/Dockerfile --target $$s --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/$$s:$(IMAGE_TAG) . || exit 1; \
	done

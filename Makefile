# flashsale-operator developer entry points. `make` (or `make help`) lists them.
#
# Tests run against real services: start Redis and MariaDB once with
# `make services` (same as `bash hack/services.sh`). CI runs `bash .ci/run`,
# which starts them and then runs `make lint` and `make test`.

# Tools are pinned and installed by hack/tools.sh outside the repository, so
# that fresh clones on the same machine (CI) reuse them.
TOOLS_BIN ?= $(HOME)/.cache/flashsale-operator/bin
export TOOLS_BIN
GOLANGCI_LINT ?= $(TOOLS_BIN)/golangci-lint
CONTROLLER_GEN ?= $(TOOLS_BIN)/controller-gen

GO ?= go
GOFMT ?= gofmt
# PKGS limits vet, lint and test to some packages, e.g. `make lint PKGS=./test/...`.
PKGS ?= ./...
# FUZZTIME is how long `make fuzz` fuzzes (a duration, or Nx for N inputs).
FUZZTIME ?= 30s
# TEST_FLAGS adds flags to `go test`, e.g. `make test TEST_FLAGS=-race`.
TEST_FLAGS ?=

# GO_FILES lists (NUL-separated) the Go files gofmt checks: those under PKGS
# except build output and testdata.
GO_FILES = find $(patsubst %/...,%,$(PKGS)) -name '*.go' -not -path './bin/*' -not -path './.git/*' -not -path '*/testdata/*' -print0

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: fmt
fmt: ## Format all Go files with gofmt.
	@$(GO_FILES) | xargs -0 -r $(GOFMT) -l -w

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet $(PKGS)

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods of the API types (zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: lint
lint: golangci-lint ## Check gofmt, run go vet and golangci-lint (config: .golangci.yml).
	@unformatted="$$($(GO_FILES) | xargs -0 -r $(GOFMT) -l)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files are not formatted (run 'make fmt'):"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet $(PKGS)
	$(GOLANGCI_LINT) run $(PKGS)

.PHONY: test
test: vet ## Run go vet, all tests (real Redis/MariaDB: see `make services`), then a 10 s fuzz run.
	$(GO) test $(PKGS) -count=1 -timeout 20m $(TEST_FLAGS)
	$(MAKE) fuzz FUZZTIME=10s

.PHONY: fuzz
fuzz: ## Fuzz the purchase path for FUZZTIME (default 30s).
	$(GO) test ./runtime/seckill -run '^$$' -fuzz '^FuzzPurchase$$' -fuzztime $(FUZZTIME)

.PHONY: bench
bench: ## Benchmark the purchase path (hack/bench.sh) and the order pipeline (hack/pipelinebench).
	bash hack/bench.sh
	$(GO) run ./hack/pipelinebench

.PHONY: demo
demo: services ## Start Redis if needed, then run a flash sale locally from end to end (flashsale demo).
	$(GO) run . demo

.PHONY: services
services: ## Start the local Redis and MariaDB the tests use (idempotent).
	bash hack/services.sh

##@ Build

.PHONY: build
build: ## Build the flashsale binary into bin/flashsale.
	$(GO) build -o bin/flashsale .

.PHONY: clean
clean: ## Remove build output (bin/) and test artifacts of the repository.
	rm -rf bin/ cover.out coverage.out

##@ Tools

.PHONY: golangci-lint
golangci-lint: ## Install the pinned golangci-lint into TOOLS_BIN if missing.
	@bash hack/tools.sh golangci-lint >/dev/null

.PHONY: controller-gen
controller-gen: ## Install the pinned controller-gen into TOOLS_BIN if missing.
	@bash hack/tools.sh controller-gen >/dev/null

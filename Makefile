# flashsale-operator developer entry points. `make` (or `make help`) lists them.
#
# Tests run against real services: start Redis and MariaDB once with
# `make services` (same as `bash hack/services.sh`). The API tests run a real
# kube-apiserver and etcd (envtest) that `make controlplane` builds from the Go
# module proxy into a cache outside the repository; `make test` builds them if
# needed and exports KUBEBUILDER_ASSETS. CI runs `bash .ci/run`, which starts
# the services and then runs `make lint` and `make test`.

# Tools are pinned and installed by hack/tools.sh outside the repository, so
# that fresh clones on the same machine (CI) reuse them.
TOOLS_BIN ?= $(HOME)/.cache/flashsale-operator/bin
export TOOLS_BIN
GOLANGCI_LINT ?= $(TOOLS_BIN)/golangci-lint
CONTROLLER_GEN ?= $(TOOLS_BIN)/controller-gen
HELM ?= $(TOOLS_BIN)/helm
HELM_DOCS ?= $(TOOLS_BIN)/helm-docs
PROMETHEUS ?= $(TOOLS_BIN)/prometheus

GO ?= go
GOFMT ?= gofmt
# PKGS limits vet, lint and test to some packages, e.g. `make lint PKGS=./test/...`.
PKGS ?= ./...
# FUZZTIME is how long `make fuzz` fuzzes (a duration, or Nx for N inputs).
# A count, because Go 1.26's fuzz coordinator can fail a duration-bounded
# run with a spurious "context deadline exceeded" at the deadline
# (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 30000x
# TEST_FLAGS adds flags to `go test`, e.g. `make test TEST_FLAGS=-race`.
TEST_FLAGS ?=
# OPERATOR_BENCHTIME is the -benchtime of `make bench-operator` (Nx: N
# iterations; one of BenchmarkHundredSales is 100 sales and a 10 s hold).
OPERATOR_BENCHTIME ?= 5x
# IMG is the tag `make image` gives the image; VERSION is what `flashsale
# version` prints in it (and its org.opencontainers.image.version label).
IMG ?= flashsale-operator:dev
VERSION ?= dev

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

.PHONY: manifests
manifests: controller-gen ## Generate the CRD (config/crd/bases) and RBAC (config/rbac) from the markers in api/ and controllers/, then chart-sync.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/..." paths="./controllers/..." \
		output:crd:dir=config/crd/bases output:rbac:dir=config/rbac
	bash hack/chart-sync.sh

.PHONY: chart-sync
chart-sync: ## Copy the CRD, the RBAC rules, the Prometheus rules and the Grafana dashboard from config/ into charts/flashsale-operator.
	bash hack/chart-sync.sh

.PHONY: chart-docs
chart-docs: helm-docs ## Write charts/flashsale-operator/README.md (helm-docs) from its README.md.gotmpl and the `# --` comments of values.yaml.
	$(HELM_DOCS) --chart-search-root charts --sort-values-order file --log-level warning

.PHONY: docs
docs: ## Render docs/architecture.svg from docs/architecture.dot with Graphviz (hack/docs.sh installs it with apt-get if missing).
	bash hack/docs.sh

.PHONY: verify
verify: controller-gen helm-docs ## Fail if generated files (deepcopy, CRD, RBAC, the chart's copies and README) are stale: regenerates them in a temp copy and diffs.
	bash hack/verify.sh

.PHONY: lint
lint: golangci-lint ## Check gofmt, run go vet and golangci-lint (config: .golangci.yml).
	@unformatted="$$($(GO_FILES) | xargs -0 -r $(GOFMT) -l)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files are not formatted (run 'make fmt'):"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet $(PKGS)
	$(GOLANGCI_LINT) run $(PKGS)

# IMAGE_CACHE is image-cache when the tests include hack/image.
IMAGE_CACHE = $(if $(filter ./... ./hack/... ./hack/image ./hack/image/...,$(PKGS)),image-cache)

.PHONY: test
test: services vet controlplane helm promtool prometheus exporters browser-deps $(IMAGE_CACHE) ## Start Redis and MariaDB if needed, run go vet and all tests (envtest: `make controlplane`; helm, promtool, prometheus, redis_exporter, mysqld_exporter: pinned tools; the browser test: `make browser-deps`), then a brief fuzz run.
	KUBEBUILDER_ASSETS="$$(bash hack/controlplane.sh)" HELM="$(HELM)" PROMETHEUS="$(PROMETHEUS)" $(GO) test $(PKGS) -count=1 -timeout 20m $(TEST_FLAGS)
	$(MAKE) fuzz FUZZTIME=8000x

# The hack/image test builds flashsale as `make image` does (CGO_ENABLED=0,
# -trimpath), which shares no build cache with the test binaries: on a cold
# cache a second build of the whole module (about 390 CPU-seconds). The test
# allows it whatever -timeout leaves; `make test` does it here first, alone
# and outside the 20-minute -timeout, so the test only links.
.PHONY: image-cache
image-cache: ## Fill the Go build cache with the static flashsale build of `make image` (hack/image's test then takes seconds).
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	echo "go run ./hack/image: the static flashsale build the hack/image test needs (cold cache: minutes)"; \
	$(GO) run ./hack/image --platform "linux/$$($(GO) env GOARCH)" --out "$$tmp/image.tar" >/dev/null

.PHONY: test-e2e
test-e2e: helm ## Run a real sale on a real local cluster (hack/local-cluster.sh up; needs root): helm install, a FlashSale, buyers, teardown; the cluster goes down at the end.
	$(GO) test -tags e2e ./test/e2e/ -count=1 -timeout 30m -v $(TEST_FLAGS)

.PHONY: fuzz
fuzz: ## Fuzz the purchase path for FUZZTIME inputs (default 30000x).
	$(GO) test ./runtime/seckill -run '^$$' -fuzz '^FuzzPurchase$$' -fuzztime $(FUZZTIME)

.PHONY: bench
bench: ## Benchmark the purchase path (hack/bench.sh), the order pipeline (hack/pipelinebench), then the operator (bench-operator).
	bash hack/bench.sh
	$(GO) run ./hack/pipelinebench
	$(MAKE) bench-operator

.PHONY: bench-operator
bench-operator: controlplane ## Benchmark the operator on envtest: one sale from Create to Active (aim < 2 s); 100 sales at once, failing on a requeue storm.
	KUBEBUILDER_ASSETS="$$(bash hack/controlplane.sh)" $(GO) test ./controllers/ -run '^$$' -bench . -benchtime $(OPERATOR_BENCHTIME) -count 1 -timeout 30m

.PHONY: demo
demo: ## The main job: a real sale on a local Kubernetes (cluster up, image, helm install, a FlashSale, buyers, Ended); needs root. See hack/demo.sh.
	bash hack/demo.sh

.PHONY: demo-local
demo-local: services ## The same sale without Kubernetes: seckill, worker and rollback in-process against local Redis and MariaDB (flashsale demo).
	$(GO) run . demo

.PHONY: controlplane
controlplane: ## Build kube-apiserver and etcd for envtest from the Go module proxy (cached; cold: 10-15 min). Prints KUBEBUILDER_ASSETS.
	@bash hack/controlplane.sh

.PHONY: services
services: ## Start the local Redis and MariaDB the tests use (idempotent).
	bash hack/services.sh

##@ Upgrades

# Helm installs a chart's crds/ once and never upgrades them: run this before
# every `helm upgrade` (docs/versioning.md). It is server-side apply because
# the CRD is too big for client-side apply's last-applied annotation to be safe.
# Equivalent: kubectl apply --server-side --force-conflicts --field-manager=flashsale-operator -f charts/flashsale-operator/crds/
.PHONY: upgrade-crds
upgrade-crds: ## Install or upgrade the FlashSale CRD in the current kubeconfig's cluster (flashsale crds apply: server-side, prints what changed; CRDS_FLAGS=--dry-run to preview).
	$(GO) run . crds apply $(CRDS_FLAGS)

##@ Local cluster

# IMAGE_TAR is the docker-archive tarball `make cluster-load-image` imports.
IMAGE_TAR ?= bin/flashsale-image.tar

.PHONY: cluster-up
cluster-up: ## Start a real single-node Kubernetes v1.37.2 on this machine, with Redis/MariaDB/Kafka reachable from pods (hack/local-cluster.sh; root; first run builds the binaries, cold ~10 min).
	bash hack/local-cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove everything it created: processes, mounts, netns, iptables chains, cgroups, state (idempotent).
	bash hack/local-cluster.sh down

.PHONY: cluster-status
cluster-status: ## Show what of the local cluster runs, its KUBECONFIG and the endpoints pods use (fails unless it is all up).
	bash hack/local-cluster.sh status

.PHONY: cluster-load-image
cluster-load-image: ## Import IMAGE_TAR (default bin/flashsale-image.tar: `make image`) into the local cluster's containerd.
	bash hack/local-cluster.sh load-image $(IMAGE_TAR)

##@ Build

.PHONY: build
build: ## Build the flashsale binary into bin/flashsale.
	$(GO) build -o bin/flashsale .

# PLUGIN_DIR is where `make install-plugin` puts kubectl-flashsale: a
# directory on the user's PATH that needs no root.
PLUGIN_DIR ?= $(HOME)/.local/bin

.PHONY: install-plugin
install-plugin: build ## Install the kubectl plugin: a copy of bin/flashsale as PLUGIN_DIR/kubectl-flashsale (default ~/.local/bin), so `kubectl flashsale ...` runs it.
	install -d $(PLUGIN_DIR)
	install -m 0755 bin/flashsale $(PLUGIN_DIR)/kubectl-flashsale
	@echo "Installed $(PLUGIN_DIR)/kubectl-flashsale. Check it with:"
	@echo "  kubectl plugin list"
	@echo "  kubectl flashsale --help"
	@case ":$$PATH:" in *":$(PLUGIN_DIR):"*) ;; *) echo "Note: $(PLUGIN_DIR) is not on PATH; add it, or kubectl will not find the plugin.";; esac

.PHONY: image
image: ## Build the image without Docker into bin/flashsale-image.tar (IMG, VERSION); load: ctr -n k8s.io images import.
	$(GO) run ./hack/image --tag $(IMG) --version $(VERSION) --out bin/flashsale-image.tar

# DOCKER is the docker CLI `make docker-build` uses when its engine answers.
DOCKER ?= docker

.PHONY: docker-build
docker-build: ## Build the image IMG from the Dockerfile when a Docker engine answers `docker info`; else the same image without Docker (make image).
	@if command -v $(DOCKER) >/dev/null 2>&1 && $(DOCKER) info >/dev/null 2>&1; then \
		echo "$(DOCKER) build -t $(IMG) ."; \
		$(DOCKER) build --build-arg VERSION=$(VERSION) --build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" -t $(IMG) .; \
	else \
		echo "docker-build: no Docker engine answers '$(DOCKER) info': building $(IMG) without Docker instead (make image -> bin/flashsale-image.tar; load it with make cluster-load-image or ctr -n k8s.io images import)"; \
		$(MAKE) --no-print-directory image; \
	fi

.PHONY: clean
clean: ## Remove build output (bin/) and test artifacts of the repository.
	rm -rf bin/ cover.out coverage.out

##@ Deployment (the cluster of the current kubeconfig)

# NAMESPACE and RELEASE are where and as what `make deploy` installs the chart;
# DEPLOY_ARGS adds helm flags (e.g. --set metrics.secure=false). RUN_ARGS adds
# flags to `make run`'s manager. KUBECTL is only needed by `make uninstall`.
NAMESPACE ?= flashsale-system
RELEASE ?= flashsale
DEPLOY_ARGS ?=
RUN_ARGS ?=
KUBECTL ?= kubectl
# UNINSTALL_TIMEOUT bounds `make uninstall`'s wait for the FlashSales' cleanup.
UNINSTALL_TIMEOUT ?= 2m

.PHONY: run
run: ## Run the operator from source against the current kubeconfig (data-plane image IMG, plain-HTTP metrics on 127.0.0.1:8080, text logs); `make install` first.
	$(GO) run . manager --image=$(IMG) --metrics-secure=false --metrics-bind-address=127.0.0.1:8080 --log-format=text $(RUN_ARGS)

.PHONY: install
install: ## Install or upgrade the FlashSale CRD in the cluster (flashsale crds apply: server-side apply, waits until Established; same as make upgrade-crds).
	$(GO) run . crds apply

.PHONY: uninstall
uninstall: ## Delete the FlashSale CRD, and with it every FlashSale of the cluster (run it while the operator still runs, so their cleanup finishes). Needs kubectl.
	@command -v $(KUBECTL) >/dev/null 2>&1 || { echo "uninstall: '$(KUBECTL)' is not on PATH: install kubectl or set KUBECTL=/path/to/kubectl" >&2; exit 1; }
	$(KUBECTL) delete --ignore-not-found --timeout=$(UNINSTALL_TIMEOUT) -f config/crd/bases/ || { \
		echo "uninstall: the CRD is not gone within $(UNINSTALL_TIMEOUT): FlashSales still carry the operator's finalizer." >&2; \
		echo "uninstall: run the operator (make run, make deploy) so that their cleanup finishes; the CRD then goes by itself." >&2; exit 1; }

.PHONY: deploy
deploy: install helm ## Install or upgrade the chart as RELEASE in NAMESPACE (default flashsale-system) with the image IMG (the CRD first: make install); waits for the rollout.
	@repo="$(IMG)"; tag=latest; \
	if [[ "$${repo##*/}" == *:* ]]; then tag="$${repo##*:}"; repo="$${repo%:*}"; fi; \
	set -x; $(HELM) upgrade --install $(RELEASE) charts/flashsale-operator --namespace $(NAMESPACE) --create-namespace \
		--set image.repository="$$repo" $${tag:+--set image.tag="$$tag"} --wait --timeout 5m $(DEPLOY_ARGS)

.PHONY: undeploy
undeploy: helm ## Uninstall the chart RELEASE from NAMESPACE (the CRD and the FlashSales stay: make uninstall removes them).
	$(HELM) uninstall $(RELEASE) --namespace $(NAMESPACE) --ignore-not-found --wait

##@ Tools

.PHONY: golangci-lint
golangci-lint: ## Install the pinned golangci-lint into TOOLS_BIN if missing.
	@bash hack/tools.sh golangci-lint >/dev/null

.PHONY: controller-gen
controller-gen: ## Install the pinned controller-gen into TOOLS_BIN if missing.
	@bash hack/tools.sh controller-gen >/dev/null

.PHONY: helm
helm: ## Install the pinned helm into TOOLS_BIN if missing (the chart tests in test/chart use it).
	@bash hack/tools.sh helm >/dev/null

.PHONY: helm-docs
helm-docs: ## Install the pinned helm-docs into TOOLS_BIN if missing (make chart-docs writes the chart's README with it).
	@bash hack/tools.sh helm-docs >/dev/null

.PHONY: browser-deps
browser-deps: ## Install what the browser test (test/browser) needs if missing: Debian's chromium, nodejs and npm (apt-get), playwright-core as package-lock.json pins it (npm ci). See hack/browser.sh.
	@bash hack/browser.sh

.PHONY: promtool
promtool: ## Install the pinned promtool into TOOLS_BIN if missing (test/opskit checks and unit-tests the alert rules with it).
	@bash hack/tools.sh promtool >/dev/null

.PHONY: prometheus
prometheus: ## Install the pinned Prometheus into TOOLS_BIN if missing (test/alerts runs it against a live sale; a cold build takes 20-40 min).
	@bash hack/tools.sh prometheus >/dev/null

.PHONY: exporters
exporters: ## Build the pinned redis_exporter and mysqld_exporter into TOOLS_BIN if missing (test/opskit runs them against the local Redis and MariaDB).
	@bash hack/tools.sh redis_exporter mysqld_exporter >/dev/null

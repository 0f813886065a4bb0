# fargo — see README.md. `make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

include tests/cluster/versions.env
FARGO_CACHE ?= $(HOME)/.cache/fargo
K8S_BIN := $(FARGO_CACHE)/bin/kubernetes-$(KUBERNETES_VERSION)
HELM_BIN := $(FARGO_CACHE)/bin/helm-$(HELM_VERSION)

export KUBECONFIG := $(CURDIR)/.cluster/kubeconfig
export KUBECTL := $(K8S_BIN)/kubectl
export PATH := $(K8S_BIN):$(HELM_BIN):$(PATH)

.PHONY: test lint unit integration cluster-up cluster-down images crds dev bench fuzz

## test: lint, unit tests, then the integration tests against a local cluster started for them
test: lint unit
	@if tests/cluster/up.sh --running 2>/dev/null; then \
	  echo "reusing the running local cluster"; \
	  $(MAKE) --no-print-directory images integration; \
	else \
	  tests/cluster/up.sh; \
	  status=0; $(MAKE) --no-print-directory images integration || status=$$?; \
	  tests/cluster/down.sh; exit $$status; \
	fi

lint:
	cargo fmt --check
	cargo clippy --all-targets --locked -- -D warnings
# --all-targets leaves out tests marked `test = false` (tests/install.rs).
	cargo clippy --test install --locked -- -D warnings

## unit: the pure logic, the reconcilers replayed against recorded API exchanges, and the inputs
## that once failed a fuzz target (no cluster, no nightly)
unit:
	cargo test --locked --lib --bins --test exchanges --test fuzz_regressions

## integration: the tests under tests/ against the cluster in KUBECONFIG; then, alone, the Helm
## install test (tests/install.rs), whose release would collide with the other tests' controllers
integration:
	cargo test --locked --tests
	cargo test --locked --test install

cluster-up:
	tests/cluster/up.sh

cluster-down:
	tests/cluster/down.sh

## images: build the fargo and echo images from release binaries and import them into the node
images:
	tests/cluster/images.sh all

## crds: regenerate crds/ from the Rust types
crds:
	cargo run --quiet --bin fargo -- crds --out-dir crds

## dev: the local cluster with its real node, the images, the CRDs, fargo installed with Helm, and
## the example function examples/echo-function.yaml; then how to call it from this machine
dev:
	FARGO_NODE=real tests/cluster/up.sh
	tests/cluster/images.sh all
	kubectl apply --server-side -f crds/
	kubectl wait --for=condition=Established crd --all --timeout=60s
# Webhook configurations registered by the tests' out-of-cluster controllers (not Helm's) would
# block the release from taking them over.
	kubectl delete mutatingwebhookconfiguration,validatingwebhookconfiguration --ignore-not-found \
	  --field-selector metadata.name=fargo -l 'app.kubernetes.io/managed-by!=Helm'
	helm upgrade --install fargo charts/fargo -n fargo-system --create-namespace --wait --timeout 300s
	kubectl apply --server-side -f examples/echo-function.yaml
	kubectl wait --for=condition=Ready fn/echo -n demo --timeout=60s
	@activator="$$(kubectl -n fargo-system get service fargo-activator -o jsonpath='{.spec.clusterIP}')"; \
	printf '\nfargo runs in fargo-system; function demo/echo is at zero. From this machine:\n\n'; \
	printf '  export KUBECONFIG=%s PATH=%s:%s:$$PATH\n' "$(KUBECONFIG)" "$(K8S_BIN)" "$(HELM_BIN)"; \
	printf '  curl http://%s/demo/echo/        # wakes it: the first answer waits for its pod\n' "$$activator"; \
	printf '  kubectl get fn,pods -n demo -w         # watch it wake, and go back to zero after 30s idle\n\n'

## fuzz: every libFuzzer target in fuzz/ for FUZZ_SECONDS seconds each, on nightly with cargo-fuzz
## (installed from crates.io when missing); each corpus grows in fuzz/corpus/<target> from the
## seeds in fuzz/seeds/<target>, and every input in fuzz/regressions/<target> is run first
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := admission routing cron quantity
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$target; \
	  if [ -d seeds/$$target ]; then cp -r seeds/$$target/. corpus/$$target/; fi; \
	  dirs=(corpus/$$target); if [ -d regressions/$$target ]; then dirs+=(regressions/$$target); fi; \
	  cargo +nightly fuzz run $$target "$${dirs[@]}" -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1; \
	done

## bench: benchmarks against a local cluster (started if none runs; left running)
bench: cluster-up
	cargo bench --locked

.PHONY: chart
## chart: regenerate charts/fargo/crds/ from the Rust types, lint the chart and render
## deploy/fargo.yaml from it (tests/chart.rs fails when either is out of date)
chart:
	rm -f charts/fargo/crds/*.yaml
	cargo run --quiet --bin fargo -- crds --out-dir charts/fargo/crds
	helm lint --strict --quiet charts/fargo
	deploy/render.sh > deploy/fargo.yaml.tmp
	mv deploy/fargo.yaml.tmp deploy/fargo.yaml

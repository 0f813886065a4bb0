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

.PHONY: test lint unit integration test-local test-kind cluster-up cluster-down images crds dev bench bench-peers fuzz

## test: lint, unit tests, the integration tests against a local cluster started for them, then
## the kind tier (test-kind)
test: lint unit test-local test-kind

## test-local: the integration tests against the local cluster (tests/cluster/), started for
## them and stopped after, or the one already running
test-local:
	@if tests/cluster/up.sh --running 2>/dev/null; then \
	  echo "reusing the running local cluster"; \
	  $(MAKE) --no-print-directory images integration; \
	else \
	  tests/cluster/up.sh; \
	  status=0; $(MAKE) --no-print-directory images integration || status=$$?; \
	  tests/cluster/down.sh; exit $$status; \
	fi

## test-kind: fargo installed with Helm on a kind cluster, and the cluster-agnostic end-to-end
## tests (tests/e2e.rs) against it; everything, Docker engine included, is brought up for them
## and torn down after (KEEP=1 leaves it; `tests/e2e/kind.sh down` removes it)
test-kind:
	tests/e2e/kind.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets --locked -- -D warnings
# --all-targets leaves out tests marked `test = false` (tests/install.rs, tests/e2e.rs).
	cargo clippy --test install --test e2e --locked -- -D warnings

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

## images: build the images (fargo, echo, the runtimes, NATS) and import them into the node
images:
	tests/cluster/images.sh all

## crds: regenerate crds/ from the Rust types
crds:
	cargo run --quiet --bin fargo -- crds --out-dir crds

## dev: the local cluster with its real node, the images, the CRDs, fargo installed with Helm (and
## its NATS), the example function examples/echo-function.yaml, a key of the Invoke API, and
## versitygw (an S3 server whose bucket notifications go to fargo's NATS); then how to call it
## from this machine, with curl and with the AWS CLI
dev:
	FARGO_NODE=real tests/cluster/up.sh
	tests/cluster/images.sh all
	kubectl apply --server-side -f crds/
	kubectl wait --for=condition=Established crd --all --timeout=60s
# The Invoke API's access key (charts/fargo/README.md), made once and kept: a rerun prints the
# same. It may invoke every namespace's functions; a plain function name means one of demo.
	kubectl get namespace fargo-system >/dev/null 2>&1 || kubectl create namespace fargo-system
	if ! kubectl -n fargo-system get secret fargo-invoke-keys >/dev/null 2>&1; then \
	  key="AKFARGO$$(openssl rand -hex 6 | tr a-f A-F)"; \
	  secret="$$(openssl rand -base64 30)"; \
	  kubectl -n fargo-system create secret generic fargo-invoke-keys \
	    --from-literal="$$key={\"secretAccessKey\": \"$$secret\", \"namespaces\": [\"demo\", \"*\"]}"; \
	fi
# The storage notification token of versitygw, which publishes on fargo.storage.versitygw: its
# notifications reach the functions of every namespace. Made once and kept.
	if ! kubectl -n fargo-system get secret fargo-storage-tokens >/dev/null 2>&1; then \
	  kubectl -n fargo-system create secret generic fargo-storage-tokens \
	    --from-literal="versitygw={\"token\": \"$$(openssl rand -hex 24)\", \"namespaces\": [\"*\"]}"; \
	fi
# Webhook configurations registered by the tests' out-of-cluster controllers (not Helm's) would
# block the release from taking them over.
	kubectl delete mutatingwebhookconfiguration,validatingwebhookconfiguration --ignore-not-found \
	  --field-selector metadata.name=fargo -l 'app.kubernetes.io/managed-by!=Helm'
# versitygw publishes bucket notifications to the chart's NATS, whose NetworkPolicy lets it in.
	helm upgrade --install fargo charts/fargo -n fargo-system --create-namespace --wait --timeout 300s \
	  --set-json 'nats.networkPolicy.clientFrom=[{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "versitygw"}}}]'
# versitygw's root keys (Secret fargo-s3) are made once and kept, like the Invoke API's: a rerun
# hands the manifest the ones the cluster has.
	s3_key() { kubectl -n fargo-system get secret fargo-s3 -o "jsonpath={.data.$$1}" 2>/dev/null | base64 -d; }; \
	FARGO_S3_ACCESS_KEY_ID="$$(s3_key AWS_ACCESS_KEY_ID)" \
	FARGO_S3_SECRET_ACCESS_KEY="$$(s3_key AWS_SECRET_ACCESS_KEY)" \
	FARGO_S3_EVENTS=nats tests/cluster/versitygw.sh manifest | kubectl apply --server-side -f -
	kubectl -n fargo-system rollout status deployment/versitygw --timeout=120s
	kubectl apply --server-side -f examples/echo-function.yaml
	kubectl wait --for=condition=Ready fn/echo -n demo --timeout=60s
	@activator="$$(kubectl -n fargo-system get service fargo-activator -o jsonpath='{.spec.clusterIP}')"; \
	read -r key value < <(kubectl -n fargo-system get secret fargo-invoke-keys \
	  -o go-template='{{range $$key, $$value := .data}}{{$$key}} {{$$value}}{{"\n"}}{{end}}'); \
	secret="$$(base64 -d <<<"$$value" | sed -n 's/.*"secretAccessKey": *"\([^"]*\)".*/\1/p')"; \
	printf '\nfargo runs in fargo-system; function demo/echo is at zero. From this machine:\n\n'; \
	printf '  export KUBECONFIG=%s PATH=%s:%s:$$PATH\n' "$(KUBECONFIG)" "$(K8S_BIN)" "$(HELM_BIN)"; \
	printf '  curl http://%s/demo/echo/        # wakes it: the first answer waits for its pod\n' "$$activator"; \
	printf '  kubectl get fn,pods -n demo -w         # watch it wake, and go back to zero after 30s idle\n\n'; \
	printf 'The same through the Lambda Invoke API, with the key of Secret fargo-invoke-keys:\n\n'; \
	printf '  export PATH="$$(%s/tests/cluster/awscli.sh):$$PATH"  # the AWS CLI, if this machine lacks one\n' "$(CURDIR)"; \
	printf '  export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s\n' "$$key" "$$secret"; \
	printf '  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1  # the CLI v1 reads the second\n'; \
	printf "  aws lambda invoke --endpoint-url http://%s --function-name demo/echo --payload '{}' out.json\n" "$$activator"; \
	printf '  cat out.json   # with the AWS CLI v2, add --cli-binary-format raw-in-base64-out\n\n'
	@endpoint="http://$$(kubectl -n fargo-system get service versitygw -o jsonpath='{.spec.clusterIP}'):7070"; \
	s3_key() { kubectl -n fargo-system get secret fargo-s3 -o "jsonpath={.data.$$1}" | base64 -d; }; \
	printf 'An S3 server, versitygw, with the keys of Secret fargo-s3 (not the Invoke API'"'"'s); it\n'; \
	printf 'publishes every object event on NATS subject fargo.storage.versitygw, which reaches\n'; \
	printf 'the functions with spec.triggers.storage of every namespace (token versitygw of Secret\n'; \
	printf 'fargo-storage-tokens):\n\n'; \
	printf '  s3="env AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s"\n' "$$(s3_key AWS_ACCESS_KEY_ID)" "$$(s3_key AWS_SECRET_ACCESS_KEY)"; \
	printf '  $$s3 aws s3 mb s3://photos --endpoint-url %s\n' "$$endpoint"; \
	printf '  $$s3 aws s3 cp cat.jpg s3://photos/in/cat.jpg --endpoint-url %s\n\n' "$$endpoint"

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

## bench-peers: the functions benchmark's echo cold starts and proxy paths with Knative Serving
## beside fargo (built from its Go modules, brought up on the local cluster, and taken down after,
## whatever the outcome); FARGO_BENCH_PARTS (default cold,proxy) chooses the parts
bench-peers: cluster-up images
	benches/peers/knative.sh up && \
	  FARGO_BENCH_PARTS=$${FARGO_BENCH_PARTS-cold,proxy} cargo bench --locked --bench functions; \
	  status=$$?; benches/peers/knative.sh down; exit $$status

.PHONY: chart
## chart: regenerate charts/fargo/crds/ from the Rust types, lint the chart and render
## deploy/fargo.yaml from it (tests/chart.rs fails when either is out of date)
chart:
	rm -f charts/fargo/crds/*.yaml
	cargo run --quiet --bin fargo -- crds --out-dir charts/fargo/crds
	helm lint --strict --quiet charts/fargo
	deploy/render.sh > deploy/fargo.yaml.tmp
	mv deploy/fargo.yaml.tmp deploy/fargo.yaml

#!/usr/bin/env bash
# The kind tier: fargo installed by its Helm chart on a kind cluster, and the cluster-agnostic
# end-to-end tests (tests/e2e.rs) run against it, as a user runs them. `make test-kind`.
#
#   tests/e2e/kind.sh           cluster, images, chart, tests; then tears everything down,
#                               whatever happened
#   KEEP=1 tests/e2e/kind.sh    leaves the cluster (and a Docker engine started here) running
#   tests/e2e/kind.sh down      tears down what KEEP=1 left
#
# Docker: the engine of DOCKER_HOST, or the machine's, when one answers; otherwise one started
# here for the run (tests/e2e/docker.sh: Debian's docker.io, no systemd needed) and stopped
# after. kind, kubeadm, CoreDNS, Helm and kubectl are built from the Go module proxy and cached
# (tests/cluster/build.sh kind); the node image is assembled here (tests/e2e/node-image.sh), so
# nothing is pulled from a container registry: fargo's images come from this checkout's
# Dockerfile (its *-prebuilt targets, on a glibc base made from this machine's libraries) and
# NATS's from tests/cluster/images.sh, all put on the node with `kind load`.
#
# The cluster `fargo-e2e` (KIND_CLUSTER) has one node, pods on 10.245.0.0/16 and Services on
# 10.97.0.0/16, ranges apart from the local cluster's (tests/cluster/); `make test` runs the two
# tiers one after the other.
# Its CNI is a bridge with kube-router enforcing NetworkPolicies (kindnetd is not built here).
# Kubeconfig: <repo>/.cluster/kind-kubeconfig. Needs root (debootstrap, dockerd), Go and cargo.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
log_tag=kind
e2e="$root/tests/e2e"
# shellcheck source-path=SCRIPTDIR source=../cluster/versions.env
source "$root/tests/cluster/versions.env"
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
cluster="${KIND_CLUSTER:-fargo-e2e}"
kubeconfig="$state/kind-kubeconfig"
kind="$cache/bin/kind-$KIND_VERSION/kind"
export PATH="$cache/bin/kubernetes-$KUBERNETES_VERSION:$cache/bin/helm-$HELM_VERSION:$PATH"
export KUBECONFIG="$kubeconfig"
pause_version="$(pause_version)"
# Set when this run started the Docker engine, which it then stops.
engine_marker="$state/kind-docker-engine"
release=fargo
release_namespace=fargo-system

# --- the Docker engine ----------------------------------------------------------------------
use_engine() {
  if [[ -n "${DOCKER_HOST:-}" ]] || docker info >/dev/null 2>&1; then
    docker info >/dev/null 2>&1 || die "no Docker engine answers at DOCKER_HOST=$DOCKER_HOST"
    log "using the Docker engine at ${DOCKER_HOST:-the default socket}"
    return 0
  fi
  DOCKER_HOST="$("$e2e/docker.sh" up)"
  export DOCKER_HOST
  mkdir -p "$state"
  echo "$DOCKER_HOST" >"$engine_marker"
}

# --- the cluster ----------------------------------------------------------------------------
kind_config() {
  cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  podSubnet: 10.245.0.0/16
  serviceSubnet: 10.97.0.0/16
containerdConfigPatches:
# Where the node's containerd may not lower its own OOM score (a sandboxed machine), every
# sandbox would fail with "can't get final child's PID from pipe: EOF" without this.
- |-
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
    sandbox_image = "fargo.dev/pause:$pause_version"
kubeadmConfigPatches:
# Kubernetes 1.36's kubelet refuses a cgroup v1 machine unless told otherwise.
- |
  kind: KubeletConfiguration
  failCgroupV1: false
- |
  kind: ClusterConfiguration
  etcd:
    local:
      imageRepository: fargo.dev
      imageTag: $ETCD_VERSION
EOF
}

# kube-router's network-policy firewall on every node, as on the local cluster's node: routes
# and services stay the bridge's and kube-proxy's.
kube_router() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: kube-router, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kube-router}
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kube-router}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-router}
subjects: [{kind: ServiceAccount, name: kube-router, namespace: kube-system}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-router, namespace: kube-system, labels: {k8s-app: kube-router}}
spec:
  selector: {matchLabels: {k8s-app: kube-router}}
  template:
    metadata: {labels: {k8s-app: kube-router}}
    spec:
      serviceAccountName: kube-router
      hostNetwork: true
      priorityClassName: system-node-critical
      tolerations: [{operator: Exists}]
      containers:
      - name: kube-router
        image: fargo.dev/kube-router:$KUBE_ROUTER_VERSION
        imagePullPolicy: Never
        command: [/usr/local/bin/kube-router]
        args:
        - --hostname-override=\$(NODE_NAME)
        - --run-firewall=true
        - --run-router=false
        - --run-service-proxy=false
        - --enable-cni=false
        - --enable-ipv4=true
        - --enable-ipv6=false
        - --service-cluster-ip-range=10.97.0.0/16
        - --health-port=20244
        - --metrics-port=0
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        securityContext: {privileged: true}
        readinessProbe:
          httpGet: {path: /healthz, port: 20244}
          periodSeconds: 2
        volumeMounts:
        - {name: lib-modules, mountPath: /lib/modules, readOnly: true}
        - {name: xtables-lock, mountPath: /run/xtables.lock}
      volumes:
      - name: lib-modules
        hostPath: {path: /lib/modules}
      - name: xtables-lock
        hostPath: {path: /run/xtables.lock, type: FileOrCreate}
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: runc}
handler: runc
EOF
}

create_cluster() {
  local image
  image="$("$e2e/node-image.sh")"
  # A cluster of this name left by a run that was killed goes first.
  if "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "deleting the cluster $cluster left by an earlier run"
    "$kind" delete cluster --name "$cluster" >/dev/null 2>&1
  fi
  log "creating the kind cluster $cluster ($image)"
  local config="$state/kind-config.yaml"
  mkdir -p "$state"
  kind_config >"$config"
  "$kind" create cluster --name "$cluster" --image "$image" --config "$config" \
    --kubeconfig "$kubeconfig" --wait 120s 2>&1 | grep -v '^ [•✓]' >&2 || true
  "$kind" get clusters | grep -qx "$cluster" || die "kind create cluster failed"
  kubectl apply -f - >/dev/null < <(kube_router)
  # Pods may resolve names only once CoreDNS answers; the fence only once kube-router runs.
  kubectl -n kube-system rollout status daemonset/kube-router --timeout=120s >&2
  kubectl -n kube-system rollout status deployment/coredns --timeout=120s >&2
  log "cluster $cluster ready"
}

# --- fargo ----------------------------------------------------------------------------------
load_images() {
  local release_dir="$root/target/release" base_dir base
  log "cargo build --release (fargo, fargo-runtime-api, fargo-standby, fargo-echo)"
  (cd "$root" && cargo build --release --locked --bin fargo --bin fargo-runtime-api \
    --bin fargo-standby --bin fargo-echo)
  # The base the Dockerfile's RUNTIME_IMAGE names: what distroless/cc holds (glibc, libgcc),
  # taken from this machine, as tests/cluster/images.sh does for the local cluster.
  base_dir="$(mktemp -d)"
  "$root/tests/cluster/images.sh" runtime-base "$base_dir" \
    "$release_dir/fargo" "$release_dir/fargo-runtime-api" "$release_dir/fargo-standby" \
    "$release_dir/fargo-echo"
  base="fargo.dev/runtime-base:$(cd "$base_dir" && find . -type f -print0 | sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-12)"
  tar -C "$base_dir" -c . | docker import - "$base" >/dev/null
  rm -rf "$base_dir"
  log "docker build: fargo.dev/fargo:dev, fargo.dev/standby:dev and fargo.dev/echo:dev (the" \
    "Dockerfile's prebuilt targets)"
  local target
  for target in fargo standby echo; do
    DOCKER_BUILDKIT=0 docker build -q --build-arg "RUNTIME_IMAGE=$base" \
      --target "$target-prebuilt" -t "fargo.dev/$target:dev" "$root" >/dev/null 2>"$state/logs/docker-build-$target.log" ||
      { cat "$state/logs/docker-build-$target.log" >&2; die "docker build --target $target-prebuilt failed"; }
  done
  "$kind" load docker-image --name "$cluster" fargo.dev/fargo:dev fargo.dev/standby:dev \
    fargo.dev/echo:dev >&2
  # The chart's NATS, an image tests/cluster/images.sh writes as an OCI archive.
  FARGO_IMAGES_NO_IMPORT=1 "$root/tests/cluster/images.sh" nats
  "$kind" load image-archive --name "$cluster" "$root/target/images/nats.tar" >&2
}

install_fargo() {
  log "kubectl apply -f crds/; helm install $release"
  kubectl apply --server-side -f "$root/crds/" >/dev/null
  kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
  helm install "$release" "$root/charts/fargo" -n "$release_namespace" --create-namespace \
    --wait --timeout 300s >/dev/null ||
    {
      kubectl -n "$release_namespace" get pods -o wide >&2 || true
      kubectl -n "$release_namespace" get events --sort-by=.lastTimestamp >&2 || true
      die "helm install failed"
    }
  log "fargo installed"
}

# --- tearing down ---------------------------------------------------------------------------
down() {
  if command -v docker >/dev/null && [[ -f "$engine_marker" ]]; then
    DOCKER_HOST="$(cat "$engine_marker")"
    export DOCKER_HOST
  fi
  if [[ -x "$kind" ]] && docker info >/dev/null 2>&1 &&
    "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "deleting the kind cluster $cluster"
    "$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  rm -f "$kubeconfig"
  if [[ -f "$engine_marker" ]]; then
    "$e2e/docker.sh" down
    rm -f "$engine_marker"
  fi
}

case "${1:-}" in
  down)
    down
    exit 0
    ;;
  "") ;;
  *)
    echo "usage: $0 [down]" >&2
    exit 2
    ;;
esac

((EUID == 0)) || die "the kind tier needs root (dockerd, debootstrap)"
log_clock_start="$EPOCHREALTIME"
on_exit() {
  local status=$?
  down
  exit "$status"
}
[[ -n "${KEEP:-}" ]] || trap on_exit EXIT
"$root/tests/cluster/build.sh" kind
"$root/tests/cluster/node.sh" build
use_engine
create_cluster
load_images
install_fargo
log "cargo test --test e2e"
(cd "$root" && KUBECTL="$(command -v kubectl)" cargo test --locked --test e2e)
log "the kind tier passed"

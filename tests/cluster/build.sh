#!/usr/bin/env bash
# Builds the binaries of the local cluster from the Go module proxy, once per version.
#
#   tests/cluster/build.sh            build whatever is missing from the cache
#   tests/cluster/build.sh versitygw  only the S3 server (function code; tests/fetch_code.rs)
#   tests/cluster/build.sh nats-server  only NATS (JetStream, the store of async invocations)
#   tests/cluster/build.sh kind       kind, kubeadm and CoreDNS: the kind tier (tests/e2e/kind.sh)
#   FARGO_CACHE=/some/dir build.sh    cache somewhere else (default ~/.cache/fargo)
#
# Output: $FARGO_CACHE/bin/<name>-<version>/ holding the binaries, and a `.done` marker
# written last, so an interrupted build is simply redone.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log_tag=build
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
go_version="$(go env GOVERSION | sed 's/^go//')"

# A wrapper module that requires $1@$2 and replaces every module that $1's own go.mod points
# at a local directory (those replaces only work inside upstream's repository) by the
# published module at the version `$3 <module>` prints.
wrapper_module() {
  local dir="$1" module="$2" version="$3" version_of="$4"
  shift 4
  local gomod
  mkdir -p "$dir"
  log "resolving $module@$version"
  gomod="$(cd "$dir" && go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module fargo.dev/cluster-build/$(basename "$dir")"
    echo
    echo "go $go_version"
    echo
    echo "require $module $version"
    echo
    # Lines like `k8s.io/api => ./staging/src/k8s.io/api` (inside or outside a block).
    sed -n 's/^[[:space:]]*\(replace[[:space:]]\+\)\{0,1\}\([^[:space:]]\+\)[[:space:]]\+=>[[:space:]]\+\.\{1,2\}\/.*/\2/p' "$gomod" |
      grep -v -e FORBIDDEN -e '^go\.etcd\.io/etcd$' -e '^go\.etcd\.io/tests/v3$' |
      while read -r replaced; do
        echo "replace $replaced => $replaced $("$version_of" "$replaced")"
      done
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for pkg in "$@"; do echo "	_ \"$pkg\""; done
    echo ")"
  } >"$dir/tools.go"
  # Fails fast, naming the module, when the proxy does not serve something.
  log "downloading the module graph of $module@$version"
  (cd "$dir" && go mod tidy)
}

# k8s.io/<staging> modules are published as v0.<minor>.<patch> of Kubernetes v1.<minor>.<patch>.
staging_version() { echo "v0.${KUBERNETES_VERSION#v1.}"; }
etcd_version() { echo "$ETCD_VERSION"; }

# The version Kubernetes' binaries report (kubeadm checks it against the cluster's).
kubernetes_ldflags() {
  local minor="${KUBERNETES_VERSION#v1.}" ldflags="-s -w" p
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldflags"
}

build_kubernetes() {
  local out="$cache/bin/kubernetes-$KUBERNETES_VERSION"
  [[ -f "$out/.done" ]] && return 0
  local src="$cache/src/kubernetes-$KUBERNETES_VERSION"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  wrapper_module "$src" k8s.io/kubernetes "$KUBERNETES_VERSION" staging_version "${pkgs[@]}"
  log "building ${cmds[*]} $KUBERNETES_VERSION (a cold build takes a while)"
  mkdir -p "$out"
  (cd "$src" && go build -trimpath -ldflags "$(kubernetes_ldflags)" -o "$out/" "${pkgs[@]}")
  touch "$out/.done"
}

# kubeadm, which only kind's node runs, from the module graph of build_kubernetes.
build_kubeadm() {
  build_kubernetes
  local out="$cache/bin/kubernetes-$KUBERNETES_VERSION"
  [[ -f "$out/.kubeadm-done" ]] && return 0
  log "building kubeadm $KUBERNETES_VERSION"
  (cd "$cache/src/kubernetes-$KUBERNETES_VERSION" &&
    go build -trimpath -ldflags "$(kubernetes_ldflags)" -o "$out/" k8s.io/kubernetes/cmd/kubeadm)
  touch "$out/.kubeadm-done"
}

build_etcd() {
  local out="$cache/bin/etcd-$ETCD_VERSION"
  [[ -f "$out/.done" ]] && return 0
  local src="$cache/src/etcd-$ETCD_VERSION"
  wrapper_module "$src" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" etcd_version go.etcd.io/etcd/server/v3
  log "building etcd $ETCD_VERSION"
  mkdir -p "$out"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
  touch "$out/.done"
}

# Modules without local replaces install directly.
build_plain() {
  local name="$1" version="$2" pkg="$3"
  local out="$cache/bin/$name-$version"
  [[ -f "$out/.done" ]] && return 0
  log "building $name $version"
  mkdir -p "$out"
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "$pkg@$version"
  touch "$out/.done"
}

# nats-server's main package is the module's root.
build_nats_server() {
  build_plain nats-server "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2
}

# Bumped whenever the files below change shape, so a cache of an older shape is redone.
stages_layout=2

# kwok reads a --config file as multi-document YAML: plain `cat` would fuse the Stages into one
# document, and the kustomization.yaml beside them is not a Stage.
yaml_documents() {
  local f
  for f in "$@"; do
    echo "---"
    cat "$f"
  done
}

kwok_stages() {
  local out="$cache/bin/kwok-$KWOK_VERSION"
  [[ "$(cat "$out/stages/.done" 2>/dev/null)" == "$stages_layout" ]] && return 0
  local dir stage="kustomize/stage"
  dir="$(cd /tmp && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  mkdir -p "$out/stages"
  # Nodes become Ready and pods Running at once: the fast stages kwok ships. Once --config
  # names any node Stage kwok adds none of its own, so the heartbeat that keeps node conditions
  # fresh (kwok renews node leases by default, hence the lease variant) has to be listed too.
  yaml_documents "$dir/$stage"/node/fast/node-*.yaml "$dir/$stage"/node/heartbeat-with-lease/node-*.yaml \
    >"$out/stages/node.yaml"
  yaml_documents "$dir/$stage"/pod/fast/pod-*.yaml >"$out/stages/pod.yaml"
  echo "$stages_layout" >"$out/stages/.done"
}

case "${1:-all}" in
  all)
    build_etcd
    build_plain kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
    kwok_stages
    build_plain helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    build_kubernetes
    build_plain versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw/cmd/versitygw
    build_nats_server
    ;;
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  kwok) build_plain kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok && kwok_stages ;;
  helm) build_plain helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm ;;
  versitygw) build_plain versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw/cmd/versitygw ;;
  nats-server) build_nats_server ;;
  kind)
    build_etcd
    build_kubeadm
    build_plain helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    build_plain kind "$KIND_VERSION" sigs.k8s.io/kind
    build_plain coredns "$COREDNS_VERSION" github.com/coredns/coredns
    ;;
  *) echo "usage: $0 [all|kubernetes|etcd|kwok|helm|versitygw|nats-server|kind]" >&2; exit 2 ;;
esac
log "binaries ready under $cache/bin"

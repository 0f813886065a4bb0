#!/usr/bin/env bash
# Joins one real node to the local control plane (tests/cluster/up.sh): containerd with the runc
# and crun runtimes, the CNI bridge/host-local/portmap plugins on a bridge of our own, kubelet,
# kube-proxy (iptables mode) and kube-router's network-policy controller (iptables + ipset).
#
#   tests/cluster/node.sh up         start the node, or keep the one already running
#   tests/cluster/node.sh down       stop it, tear down its pods and network, delete its state
#   tests/cluster/node.sh build      only build (or find cached) what the node runs
#   tests/cluster/node.sh packages   print the Debian packages the node needs, one line
#
# The node is `fargo-node`, labelled fargo.dev/node=real and untainted; pods get IPs from
# 10.244.0.0/24 on the bridge fargo0 (gateway 10.244.0.1, also the node's InternalIP) and are
# reachable from this machine. RuntimeClasses `runc` and `crun` name the two handlers. Images
# come from tests/cluster/images.sh (no registry): use `imagePullPolicy: Never` or IfNotPresent.
# There is no cluster DNS: reach Services by ClusterIP or the *_SERVICE_HOST variables. Pods
# reach the API server through the `kubernetes` Service when the API server advertises
# 10.244.0.1 (see up.sh). On the node: crictl --config .cluster/node/crictl.yaml ps.
# State lives in <repo>/.cluster/node/, logs in .cluster/logs/, pids in .cluster/pids/. It needs
# root and the packages below; it installs nothing itself. Run `down` before deleting .cluster/:
# pod volumes and container root filesystems are mounted under it.
set -euo pipefail

# Debian packages: `apt-get install -y $(tests/cluster/node.sh packages)`. .ci/run installs them
# for the tests too: python3-venv is for their AWS CLI (awscli.sh).
NODE_PACKAGES=(containerd runc crun containernetworking-plugins iptables ipset iproute2 util-linux
  openssl curl gcc libc6-dev python3-venv)
# Built from the Go module proxy and cached like build.sh's binaries.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log_tag=node
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
k8s="$cache/bin/kubernetes-$KUBERNETES_VERSION"
kubectl="$k8s/kubectl"
node_dir="$state/node"
kubeconfig="$state/kubeconfig"
pki="$node_dir/pki"
socket="$node_dir/containerd/containerd.sock"

node_name=fargo-node
bridge=fargo0
pod_cidr=10.244.0.0/24
node_ip=10.244.0.1
cluster_cidr=10.244.0.0/16
service_cidr=10.96.0.0/16
kubelet_port=10250
# Everything node.sh starts, in start order.
components=(containerd kubelet kube-proxy kube-router)
# The children find iptables, ipset, mount and the runtimes here whatever the caller's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# containerd and kubelet create the directories of container root filesystems and volumes with
# this umask: a stricter one (up.sh has 077) leaves them unreadable to non-root containers.
umask 022

# --- building -------------------------------------------------------------------------------
# go_build NAME VERSION PACKAGE: $cache/bin/NAME-VERSION/NAME, built once.
go_build() {
  local name="$1" version="$2" pkg="$3" out="$cache/bin/$1-$2"
  [[ -f "$out/.done" ]] && return 0
  log "building $name $version"
  mkdir -p "$out"
  (cd /tmp && CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$out" \
    go install -trimpath -ldflags "-s -w" "$pkg@$version")
  touch "$out/.done"
}

# The sandbox image's process, ours (node/pause.c), keyed by the hash of its source.
pause_image() { echo "fargo.dev/pause:$(pause_version)"; }
build_pause() {
  local out
  out="$cache/bin/pause-$(pause_version)"
  [[ -f "$out/.done" ]] && return 0
  log "building pause $(pause_version)"
  mkdir -p "$out"
  gcc -static -Os -s -o "$out/pause" "$here/node/pause.c"
  touch "$out/.done"
}

build() {
  build_pause
  go_build kube-router "$KUBE_ROUTER_VERSION" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  go_build crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
}
kube_router="$cache/bin/kube-router-$KUBE_ROUTER_VERSION/kube-router"
crictl_bin="$cache/bin/crictl-$CRICTL_VERSION/crictl"
crictl() { "$crictl_bin" --config "$node_dir/crictl.yaml" "$@"; }

check_packages() {
  local missing=() p
  for p in "${NODE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) ||
    die "missing Debian packages; install them with: apt-get install -y ${missing[*]}"
  command -v go >/dev/null || die "go is missing (it builds kube-router and crictl)"
  ((EUID == 0)) || die "the node needs root"
}

# --- processes ------------------------------------------------------------------------------
# stop NAME...: SIGTERM, then SIGKILL after a grace period, for each one still ours.
stop() {
  local name pid deadline
  for name in "$@"; do
    ours "$name" || { rm -f "$state/pids/$name.pid"; continue; }
    pid="$(cat "$state/pids/$name.pid")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + ${FARGO_STOP_TIMEOUT:-20}))
    while ours "$name" && ((SECONDS < deadline)); do sleep 0.2; done
    if ours "$name"; then
      log "$name outlived SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    rm -f "$state/pids/$name.pid"
  done
}

kc() { "$kubectl" --kubeconfig "$kubeconfig" --request-timeout=10s "$@"; }

# --- certificates ---------------------------------------------------------------------------
# sign NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: NAME.{key,crt} signed by the
# control plane's CA.
sign() { sign_leaf "$state/pki/ca" "$pki" "$@"; }

# write_kubeconfig FILE NAME: a kubeconfig for client certificate NAME, with the server and CA
# of the admin kubeconfig up.sh wrote.
write_kubeconfig() {
  local file="$1" name="$2" server
  server="$(sed -n 's/^ *server: *//p' "$kubeconfig" | head -n1)"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fargo
  cluster:
    server: $server
    certificate-authority: $state/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $pki/$name.crt
    client-key: $pki/$name.key
contexts:
- name: fargo
  context: {cluster: fargo, user: $name}
current-context: fargo
EOF
}

# --- configuration --------------------------------------------------------------------------
write_configs() {
  mkdir -p "$node_dir"/{containerd,cni/net.d,cni/ipam,kubelet,pod-logs}
  mkdir -p "$pki" && chmod 700 "$pki"

  cat >"$node_dir/containerd/config.toml" <<EOF
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$socket"

[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Nothing here may lower oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  sandbox_image = "$(pause_image)"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "$(command -v crun)"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni/net.d"
    max_conf_num = 1
EOF

  # hairpinMode lets a pod reach itself through a Service; host-local keeps its leases with the
  # rest of our state.
  cat >"$node_dir/cni/net.d/10-fargo.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "fargo",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/cni/ipam",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
EOF

  # For a look at the node: crictl --config .cluster/node/crictl.yaml ps
  cat >"$node_dir/crictl.yaml" <<EOF
runtime-endpoint: unix://$socket
image-endpoint: unix://$socket
timeout: 20
EOF

  # Pods get no cluster DNS (there is none); this file keeps the machine's own out of them.
  cat >"$node_dir/resolv.conf" <<EOF
nameserver 127.0.0.1
options ndots:1
EOF

  # Evictions and image garbage collection are off in all but name: a busy shared disk must not
  # evict test pods, and imported images cannot be pulled back once collected.
  cat >"$node_dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$socket
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization:
  mode: Webhook
podCIDR: $pod_cidr
resolvConf: $node_dir/resolv.conf
podLogsDir: $node_dir/pod-logs
clusterDomain: cluster.local
registerNode: true
serializeImagePulls: false
nodeStatusReportFrequency: 10s
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF

  cat >"$node_dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $node_dir/kube-proxy.kubeconfig
hostnameOverride: $node_name
clusterCIDR: $cluster_cidr
detectLocalMode: ClusterCIDR
# NodePorts on the node's address and on localhost (tests reach them from this machine).
nodePortAddresses: ["$node_ip/32", 127.0.0.0/8]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# --- host setup -----------------------------------------------------------------------------
host_setup() {
  # crun refuses a hybrid hierarchy while cgroup2 holds hugetlb: give it its v1 hierarchy.
  if ! findmnt -rn -t cgroup -o OPTIONS /sys/fs/cgroup/hugetlb 2>/dev/null | grep -qw hugetlb; then
    log "mounting the hugetlb cgroup v1 hierarchy"
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
  fi
  # Forwarding for pod traffic; bridged traffic through iptables for kube-proxy and policies.
  echo 1 >/proc/sys/net/ipv4/ip_forward
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  # The bridge exists before the first pod so that the kubelet can take its address as the
  # node's; the bridge plugin adopts it.
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
  fi
  ip addr replace "$node_ip/${pod_cidr#*/}" dev "$bridge"
  ip link set "$bridge" up
}

# --- up -------------------------------------------------------------------------------------
node_ready() {
  [[ "$(kc get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

up() {
  local started_at="$EPOCHREALTIME"
  check_packages
  [[ -f "$kubeconfig" && -f "$state/pki/ca.key" ]] ||
    die "no control plane in $state; start it with tests/cluster/up.sh"
  [[ -x "$k8s/kubelet" && -x "$k8s/kube-proxy" ]] ||
    die "kubelet or kube-proxy is missing from $k8s; run tests/cluster/build.sh"
  kc get --raw /readyz >/dev/null || die "the API server in $kubeconfig does not answer"

  if all_running && node_ready; then
    log "node $node_name already running"
    return 0
  fi
  if [[ -d "$node_dir" ]] || compgen -G "$state/pids/containerd.pid" >/dev/null; then
    log "replacing the node state in $node_dir, which is not a running node"
    down
  fi

  build
  mkdir -p "$state"/{pids,logs} "$node_dir"
  write_configs
  host_setup

  log "starting containerd on $socket"
  start /usr/bin/containerd --config "$node_dir/containerd/config.toml"
  wait_until "containerd" containerd ctr --address "$socket" version
  FARGO_CONTAINERD_SOCKET="$socket" "$here/images.sh" image "$(pause_image)" \
    "$cache/bin/pause-$(pause_version)/pause" 65535 2>"$state/logs/images.log" ||
    die "importing the pause image failed: $(cat "$state/logs/images.log")"

  sign kubelet-client "/O=system:nodes/CN=system:node:$node_name" clientAuth
  sign kubelet "/CN=$node_name" serverAuth "IP:$node_ip, IP:127.0.0.1, DNS:$node_name, DNS:localhost"
  sign kube-proxy "/CN=system:kube-proxy" clientAuth
  write_kubeconfig "$node_dir/kubelet.kubeconfig" kubelet-client
  write_kubeconfig "$node_dir/kube-proxy.kubeconfig" kube-proxy

  log "starting kubelet (node $node_name, $node_ip)"
  start "$k8s/kubelet" \
    --config="$node_dir/kubelet.yaml" \
    --kubeconfig="$node_dir/kubelet.kubeconfig" \
    --root-dir="$node_dir/kubelet" \
    --cert-dir="$pki" \
    --hostname-override="$node_name" \
    --node-ip="$node_ip" \
    --node-labels=fargo.dev/node=real
  wait_until "node $node_name registered" kubelet kc get node "$node_name"
  # Nothing allocates pod CIDRs (up.sh runs no node-ipam controller); this one is the bridge's.
  if [[ -z "$(kc get node "$node_name" -o jsonpath='{.spec.podCIDR}')" ]]; then
    kc patch node "$node_name" --type merge \
      -p "{\"spec\":{\"podCIDR\":\"$pod_cidr\",\"podCIDRs\":[\"$pod_cidr\"]}}" >/dev/null
  fi

  log "starting kube-proxy and kube-router"
  start "$k8s/kube-proxy" --config="$node_dir/kube-proxy.yaml"
  # Only the network-policy firewall: routes and services are the bridge's and kube-proxy's.
  # It acts with the admin's certificate (system:masters).
  start "$kube_router" \
    --kubeconfig="$kubeconfig" \
    --hostname-override="$node_name" \
    --run-firewall=true \
    --run-router=false \
    --run-service-proxy=false \
    --enable-cni=false \
    --enable-ipv4=true \
    --enable-ipv6=false \
    --service-cluster-ip-range="$service_cidr" \
    --health-port=20244 \
    --metrics-port=0

  kc apply -f - >/dev/null <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: runc}
handler: runc
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: crun}
handler: crun
EOF

  wait_until "node $node_name Ready" kubelet node_ready
  wait_until "kube-proxy" kube-proxy curl -fsS --max-time 2 http://127.0.0.1:10256/healthz
  wait_until "kube-router" kube-router curl -fsS --max-time 2 http://127.0.0.1:20244/healthz
  log "node $node_name Ready in $(seconds_since "$started_at")s (pods on $bridge, $pod_cidr)"
}

# --- down -----------------------------------------------------------------------------------
# remove_chains IPTABLES: the chains of kubelet, kube-proxy and kube-router (KUBE-*) and of
# the CNI plugins (CNI-*), with the rules that jump to them; on this machine only the node makes
# chains of those names. (kube-proxy --cleanup leaves KUBE-FIREWALL, and kube-router
# --cleanup-config v2.1.0 removes nothing and then panics.)
remove_chains() {
  local iptables="$1" table rule chain chains
  command -v "$iptables" >/dev/null || return 0
  for table in filter nat mangle raw; do
    "$iptables" -t "$table" -S >/dev/null 2>&1 || continue
    while read -r rule; do
      eval "$iptables -t $table -D ${rule#-A }" 2>/dev/null || true
    done < <("$iptables" -t "$table" -S | grep -E -- '^-A [^ ]+ .*-j (KUBE|CNI)-' |
      grep -Ev -- '^-A (KUBE|CNI)-' || true)
    chains="$("$iptables" -t "$table" -S | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p')"
    for chain in $chains; do "$iptables" -t "$table" -F "$chain" 2>/dev/null || true; done
    for chain in $chains; do "$iptables" -t "$table" -X "$chain" 2>/dev/null || true; done
  done
}

# Pids of the shims of our containerd: their command line names our socket.
our_shims() {
  local dir cmdline
  for dir in /proc/[0-9]*; do
    cmdline="$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null)" || continue
    [[ "$cmdline" == *containerd-shim* && "$cmdline" == *"$socket"* ]] && echo "${dir#/proc/}"
  done
  return 0
}

down() {
  stop kubelet
  # Its pods go with it (pod garbage collection), and a later `up` cannot mistake its old
  # status for a Ready node.
  if [[ -f "$kubeconfig" && -x "$kubectl" ]]; then
    kc delete node "$node_name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  if ours containerd && [[ -x "$crictl_bin" ]]; then
    # Stopping a sandbox runs CNI DEL: veth, IP lease, hostPort and masquerade rules go with it.
    log "removing pods"
    crictl rmp --all --force >/dev/null || true
  fi
  stop kube-router kube-proxy
  stop containerd
  local pid
  for pid in $(our_shims); do
    log "stopping leftover shim (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Pod volumes, container root filesystems and sandbox /dev/shm, deepest first.
  if [[ -d "$node_dir" ]]; then
    local mnt
    while read -r mnt; do
      umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
    done < <(findmnt -rn -o TARGET | grep -F "$node_dir/" | sort -r)
  fi
  remove_chains iptables
  remove_chains ip6tables
  # kube-router's sets, referenced by nothing once its chains are gone.
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^(inet6:)?KUBE-(SRC|DST)-' || true); do
    ipset destroy "$set" 2>/dev/null || true
  done
  if ip link show "$bridge" >/dev/null 2>&1; then
    ip link del "$bridge"
  fi
  if [[ -d "$node_dir" ]]; then
    # --one-file-system: should anything still be mounted below, it is left alone.
    rm -rf --one-file-system -- "$node_dir"
  fi
  log "node $node_name stopped"
}

# --- main -----------------------------------------------------------------------------------
# Shares up.sh's lock unless the caller (up.sh, down.sh) holds it already.
lock() {
  [[ -n "${FARGO_CLUSTER_LOCK_HELD:-}" ]] && return 0
  exec 9<"$here"
  flock -w 1800 9 || die "another cluster script has held the cluster lock for 30 minutes"
}

case "${1:-}" in
  up) lock && up ;;
  down)
    lock
    [[ -d "$state" ]] || exit 0
    down
    ;;
  build) check_packages && build ;;
  packages) echo "${NODE_PACKAGES[*]}" ;;
  *) die "usage: $0 up|down|build|packages" ;;
esac

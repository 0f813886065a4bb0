#!/usr/bin/env bash
# Runs a real local control plane on 127.0.0.1, without Docker or systemd: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, and kwok with two fake nodes.
#
#   tests/cluster/up.sh            start the cluster, or reuse the one already running
#   tests/cluster/up.sh --running  only tell (exit status) whether a cluster is running
#   tests/cluster/down.sh   stop it and delete its state
#
# State lives in <repo>/.cluster/ (pids/, logs/, pki/, etcd/, kubeconfig); use it with
#   kubectl --kubeconfig .cluster/kubeconfig ...
# Ports (all on 127.0.0.1) can be moved when something else holds them:
#   FARGO_APISERVER_PORT (6443), FARGO_ETCD_PORT (23790), FARGO_ETCD_PEER_PORT (23800),
#   FARGO_CONTROLLER_MANAGER_PORT (10257), FARGO_SCHEDULER_PORT (10259).
# FARGO_READY_TIMEOUT (120) is how many seconds each start-up step may take.
# Binaries come from build.sh's cache, $FARGO_CACHE (default ~/.cache/fargo).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log_tag=up
log_clock_start="$EPOCHREALTIME"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
bin="${FARGO_CACHE:-$HOME/.cache/fargo}/bin"
k8s="$bin/kubernetes-$KUBERNETES_VERSION"
kubectl="$k8s/kubectl"
kwok_dir="$bin/kwok-$KWOK_VERSION"
kubeconfig="$state/kubeconfig"
# Written when start-up has finished, nodes included: live processes alone may be the remains of
# an up.sh that failed half-way.
ready_marker="$state/ready"

apiserver_port="${FARGO_APISERVER_PORT:-6443}"
etcd_port="${FARGO_ETCD_PORT:-23790}"
etcd_peer_port="${FARGO_ETCD_PEER_PORT:-23800}"
kcm_port="${FARGO_CONTROLLER_MANAGER_PORT:-10257}"
scheduler_port="${FARGO_SCHEDULER_PORT:-10259}"
service_cidr="10.96.0.0/16"
# Gateway of the node's pod bridge (node.sh); also the apiserver's advertised address.
node_gateway="10.244.0.1"
# FARGO_NODE=none starts the control plane and kwok only, without the real node.
node="${FARGO_NODE:-real}"
first_service_ip="10.96.0.1"
# Everything up.sh starts, in start order; down.sh stops whatever has a pid file.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
kwok_nodes=(kwok-node-0 kwok-node-1)
wait_failure_hint="logs in $state/logs, $here/down.sh cleans up"

for tool in openssl curl; do
  command -v "$tool" >/dev/null ||
    die "$tool is missing; install it (apt-get install -y $tool) and run again"
done

# Parallel test runs may all ask for the cluster; the first starts it, the others reuse it. The
# lock is on this directory, so no lock file is left behind.
exec 9<"$here"
flock -w 1800 9 || die "another up.sh or down.sh has held the cluster lock for 30 minutes"

apiserver_ready() {
  "$kubectl" --kubeconfig "$kubeconfig" --request-timeout=2s get --raw /readyz >/dev/null 2>&1
}

running() { [[ -f "$ready_marker" && -x "$kubectl" ]] && all_running && apiserver_ready; }

if [[ "${1:-}" == "--running" ]]; then
  running
  exit
fi

if running; then
  log "cluster already running; kubeconfig: $kubeconfig"
  [[ "$node" == none ]] || FARGO_CLUSTER_LOCK_HELD=1 "$here/node.sh" up
  exit 0
fi

if [[ -d "$state" ]]; then
  # A partial cluster (a component died, the machine restarted) is not worth repairing piece by
  # piece: nothing in it is meant to outlive a test run.
  log "replacing the cluster state in $state, which is not a running cluster"
  FARGO_CLUSTER_LOCK_HELD=1 "$here/down.sh"
fi

"$here/build.sh"

# Fail on a taken port now, with its name, rather than through a bind error in some log.
for setting in "FARGO_APISERVER_PORT=$apiserver_port" "FARGO_ETCD_PORT=$etcd_port" \
  "FARGO_ETCD_PEER_PORT=$etcd_peer_port" "FARGO_CONTROLLER_MANAGER_PORT=$kcm_port" \
  "FARGO_SCHEDULER_PORT=$scheduler_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${setting#*=}") 2>/dev/null; then
    die "port ${setting#*=} on 127.0.0.1 is taken; choose another with ${setting%%=*}"
  fi
done

# The state holds private keys.
umask 077
mkdir -p "$state"/{pids,logs,pki,etcd}
pki="$state/pki"

# --- certificates -------------------------------------------------------------------------
# openssl's own default config differs between distributions; this one says all that matters.
cat >"$pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
EOF

# new_ca NAME COMMON_NAME: writes NAME.key and the self-signed NAME.crt.
new_ca() {
  new_key "$pki/$1.key"
  openssl req -x509 -new -config "$pki/openssl.cnf" -extensions ca -key "$pki/$1.key" \
    -subj "/CN=$2" -days 3650 -out "$pki/$1.crt"
}

# sign CA NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: writes NAME.key and NAME.crt,
# signed by CA.
sign() { sign_leaf "$pki/$1" "$pki" "${@:2}"; }

new_ca ca fargo-local-ca
sign ca kube-apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1, IP:$node_gateway, IP:$first_service_ip, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local"
# kubectl, tests and kwok; system:masters bypasses RBAC.
sign ca admin "/O=system:masters/CN=fargo-admin" clientAuth
# RBAC's bootstrap policy grants these two users exactly what the components need.
sign ca kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
sign ca kube-scheduler "/CN=system:kube-scheduler" clientAuth
# For logs, exec and port-forward through kubelets, once real nodes join.
sign ca kube-apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
# The front proxy, with a CA of its own as upstream advises: the apiserver vouches with it for
# the users of requests it forwards to aggregated APIs. Components that delegate authentication
# (controller manager, scheduler) also look for this CA and log errors while it is unset.
new_ca front-proxy-ca fargo-front-proxy-ca
sign front-proxy-ca front-proxy-client "/CN=front-proxy-client" clientAuth
# Service-account tokens: the apiserver signs with the private half, verifies with the public.
new_key "$pki/service-account.key"
openssl pkey -in "$pki/service-account.key" -pubout -out "$pki/service-account.pub"

# write_kubeconfig FILE USER: a kubeconfig for the client certificate USER, certificates embedded
# so the file stands alone.
write_kubeconfig() {
  local file="$1" user="$2"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fargo
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$pki/$user.crt")
    client-key-data: $(base64 -w0 "$pki/$user.key")
contexts:
- name: fargo
  context:
    cluster: fargo
    user: $user
current-context: fargo
EOF
}
write_kubeconfig "$state/kube-controller-manager.kubeconfig" kube-controller-manager
write_kubeconfig "$state/kube-scheduler.kubeconfig" kube-scheduler
write_kubeconfig "$kubeconfig" admin

# --- processes ----------------------------------------------------------------------------
# -k: these two serve with certificates they generate in memory at start.
healthz() { curl -fsSk --max-time 2 "https://127.0.0.1:$1/healthz"; }

log "starting etcd on 127.0.0.1:$etcd_port"
# fsync buys nothing for a cluster that is thrown away after the tests, and costs seconds.
start "$bin/etcd-$ETCD_VERSION/etcd" \
  --name=fargo \
  --data-dir="$state/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster="fargo=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync
# The apiserver would wait for etcd too, but fill its log with dial errors meanwhile.
wait_until "etcd /health" etcd curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health"

log "starting kube-apiserver on 127.0.0.1:$apiserver_port"
# The apiserver publishes the node bridge's gateway (node.sh creates bridge fargo0 with
# 10.244.0.1) as its address, so pods reach it through the `kubernetes` Service; an endpoint may
# not be a loopback address. Until the bridge exists that endpoint is merely unreachable. The
# apiserver reaches the kubelet by its InternalIP: the node's name resolves nowhere.
start "$k8s/kube-apiserver" \
  --advertise-address="$node_gateway" \
  --bind-address=0.0.0.0 \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --secure-port="$apiserver_port" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --tls-cert-file="$pki/kube-apiserver.crt" \
  --tls-private-key-file="$pki/kube-apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --kubelet-client-certificate="$pki/kube-apiserver-kubelet-client.crt" \
  --kubelet-client-key="$pki/kube-apiserver-kubelet-client.key" \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" \
  --proxy-client-key-file="$pki/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --service-cluster-ip-range="$service_cidr" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/service-account.pub" \
  --service-account-signing-key-file="$pki/service-account.key"
log "waiting for kube-apiserver /readyz"
wait_until "kube-apiserver /readyz" kube-apiserver apiserver_ready

log "starting kube-controller-manager and kube-scheduler"
# The authentication/authorization kubeconfigs let their secure ports check callers; without
# them each logs a stream of warnings. Leader election only slows a single-instance start. With
# one credential per controller, start-up is bound by the client rate limit: the default 20
# requests/s made the controller manager take 6s to start its controllers instead of 1.5s.
start "$k8s/kube-controller-manager" \
  --kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$kcm_port" \
  --leader-elect=false \
  --use-service-account-credentials=true \
  --kube-api-qps=200 \
  --kube-api-burst=400 \
  --controllers='*,-node-ipam-controller' \
  --service-account-private-key-file="$pki/service-account.key" \
  --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" \
  --cluster-signing-key-file="$pki/ca.key" \
  --cluster-name=fargo
start "$k8s/kube-scheduler" \
  --kubeconfig="$state/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$scheduler_port" \
  --leader-elect=false

log "starting kwok"
# The nodes kwok fakes carry this annotation; any real node (kubelet) is left alone. kwok's flag
# default is no node leases, and its heartbeat stage only refreshes node status every 10
# minutes: without leases the node lifecycle controller finds the nodes silent after 50s,
# marks them NotReady and taints them, and pods would be evicted.
# Fake pods get loopback addresses: anything that dials one (the activator probing a function
# pod) stays on this machine, where nothing serves it, instead of leaving through the default
# route for an address that exists nowhere.
start "$kwok_dir/kwok" \
  --cidr=127.88.0.1/16 \
  --kubeconfig="$kubeconfig" \
  --config="$kwok_dir/stages/node.yaml" \
  --config="$kwok_dir/stages/pod.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds=40

log "waiting for kube-controller-manager and kube-scheduler"
wait_until "kube-controller-manager /healthz" kube-controller-manager healthz "$kcm_port"
wait_until "kube-scheduler /healthz" kube-scheduler healthz "$scheduler_port"
# Pods cannot be created in a namespace until its default service account exists.
wait_until "the default service account" kube-controller-manager \
  "$kubectl" --kubeconfig "$kubeconfig" get serviceaccount default --namespace default

log "registering kwok nodes ${kwok_nodes[*]}"
# The taint keeps everything off the fake nodes except pods that tolerate it on purpose.
for node in "${kwok_nodes[@]}"; do
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    node-role.kubernetes.io/agent: ""
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
EOF
done | "$kubectl" --kubeconfig "$kubeconfig" apply -f - >/dev/null
node_ready() {
  "$kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready --timeout=1s \
    "${kwok_nodes[@]/#/node/}"
}
wait_until "kwok nodes Ready" kwok node_ready

if [[ "$node" != none ]]; then
  log "starting the real node"
  FARGO_CLUSTER_LOCK_HELD=1 "$here/node.sh" up
fi
touch "$ready_marker"

log "cluster up in $(seconds_since "$log_clock_start")s; kubeconfig: $kubeconfig"

#!/usr/bin/env bash
# Runs fargo's end-to-end tests against a kind cluster, on a machine with Docker (not in CI: the
# CI machine has no Docker engine, and uses tests/cluster/ instead).
#
#   tests/e2e/kind.sh          create cluster `fargo`, build and load the images, run the tests
#   KEEP=1 tests/e2e/kind.sh   leave the cluster running afterwards
#
# What differs from the local cluster: pod IPs are reached through a route this script adds
# (sudo), kind's node runs runc only, so a `crun` RuntimeClass is
# created pointing at runc's handler (the test that proves crun from the node is skipped), and
# the tests reach the out-of-cluster controller's webhook through the Docker bridge gateway
# instead of 127.0.0.1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cluster="${KIND_CLUSTER:-fargo}"
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || { echo "kind.sh needs $tool on PATH" >&2; exit 1; }
done

cd "$root"
if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 120s
fi
export KUBECONFIG="$root/.cluster/kind-kubeconfig"
mkdir -p "$(dirname "$KUBECONFIG")"
kind get kubeconfig --name "$cluster" >"$KUBECONFIG"
[[ -n "${KEEP:-}" ]] || trap 'kind delete cluster --name "$cluster"' EXIT

# The images, built by the Dockerfile's two targets and loaded into the node.
docker build --target fargo -t fargo.dev/fargo:dev .
docker build --target echo -t fargo.dev/echo:dev .
kind load docker-image --name "$cluster" fargo.dev/fargo:dev fargo.dev/echo:dev

# The tests pick the real node by label and run pods under RuntimeClasses runc and crun.
node="$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')"
kubectl label node "$node" fargo.dev/node=real --overwrite
for handler in runc crun; do
  kubectl apply -f - <<YAML
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: $handler}
handler: runc
YAML
done

# The tests talk to pod IPs from this machine, as on the local cluster: route the pod network
# through the node's container (needs root; kind's default pod subnet).
node_ip="$(docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' "$cluster-control-plane")"
sudo ip route replace 10.244.0.0/16 via "$node_ip"

# The API server runs in a container: it calls the tests' webhook at the Docker gateway.
gateway="$(docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}')"
export FARGO_TEST_WEBHOOK_HOST="$gateway"
export KUBECTL="$(command -v kubectl)" HELM="$(command -v helm)"

cargo test --locked --test api --test profile --test node -- \
  --skip a_profiles_runtime_class_runs_the_pod_under_crun
cargo test --locked --test install

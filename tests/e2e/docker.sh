#!/usr/bin/env bash
# A Docker engine for the kind tier, on a machine without one running (no systemd): Debian's
# dockerd started by hand, apart from anything else on the machine.
#
#   tests/e2e/docker.sh up     start it, or keep the one already running; prints DOCKER_HOST
#   tests/e2e/docker.sh down   stop it, with the networks (and bridges) it made
#   tests/e2e/docker.sh env    print `export DOCKER_HOST=...` for the running engine
#
# It has its own socket, exec root and pid file under /run/fargo-docker, and keeps its images
# under $FARGO_CACHE/docker, so a later run finds the node image it built. It changes no iptables
# rule of the machine's (--iptables=false, no default bridge): the local cluster's node
# (tests/cluster/node.sh) and kube-router keep the host's chains to themselves. kind's node
# container needs nothing that NAT would give it; the machine reaches it on kind's bridge.
#
# Its default runtime is runc without CAP_SYS_RESOURCE (runc-without-sys-resource): a privileged
# container asks for every capability, and where root itself lacks that one (as in a sandboxed
# CI machine), runc fails with "unable to apply caps: operation not permitted". Needs root and
# Debian's docker.io and jq.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
log_tag=docker
components=(dockerd)
e2e="$root/tests/e2e"
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
run_dir=/run/fargo-docker
socket="$run_dir/docker.sock"
pidfile="$run_dir/dockerd.pid"
data_root="$cache/docker"

docker_host() { echo "unix://$socket"; }

running() {
  local pid
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  runs "$pid" dockerd && DOCKER_HOST="$(docker_host)" docker version >/dev/null 2>&1
}

up() {
  command -v dockerd >/dev/null || die "dockerd is missing: apt-get install docker.io"
  command -v jq >/dev/null || die "jq is missing: apt-get install jq"
  if running; then
    log "dockerd already running ($(docker_host))"
    docker_host
    return 0
  fi
  mkdir -p "$run_dir" "$data_root" "$state/logs" "$state/pids"
  # docker reads a config for the CLI; keep it from a user's ~/.docker.
  log "starting dockerd (data root $data_root)"
  start dockerd \
    --host "$(docker_host)" \
    --pidfile "$pidfile" \
    --exec-root "$run_dir/exec" \
    --data-root "$data_root" \
    --iptables=false \
    --ip-masq=false \
    --bridge=none \
    --storage-driver=overlay2 \
    --add-runtime "fargo-runc=$e2e/runc-without-sys-resource" \
    --default-runtime fargo-runc
  wait_until "dockerd" dockerd env DOCKER_HOST="$(docker_host)" docker version
  log "dockerd ready"
  docker_host
}

down() {
  local pid bridge bridges=() id name
  if running; then
    # Images replaced by a later build of the same name (fargo's, on every run).
    DOCKER_HOST="$(docker_host)" docker image prune -f >/dev/null 2>&1 || true
    # kind's networks; a network's bridge is br-<the first 12 characters of its id>.
    while read -r id name; do
      case "$name" in bridge | host | none) continue ;; esac
      bridges+=("br-${id:0:12}")
      DOCKER_HOST="$(docker_host)" docker network rm "$id" >/dev/null 2>&1 || true
    done < <(DOCKER_HOST="$(docker_host)" docker network ls --no-trunc --format '{{.ID}} {{.Name}}')
  fi
  pid="$(cat "$pidfile" 2>/dev/null)" || pid=""
  if [[ -n "$pid" ]] && runs "$pid" dockerd; then
    log "stopping dockerd ($pid)"
    kill "$pid"
    for _ in $(seq 100); do not_exited "$pid" || break; sleep 0.2; done
    not_exited "$pid" && kill -9 "$pid"
  fi
  # Bridges of this engine's networks that it left behind; those of another engine stay.
  for bridge in "${bridges[@]}"; do
    ip link delete "$bridge" 2>/dev/null || true
  done
  rm -rf "$run_dir"
  log "dockerd stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) running && echo "export DOCKER_HOST=$(docker_host)" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Stops the local cluster that up.sh started and deletes its state, <repo>/.cluster/.
#
#   tests/cluster/down.sh   safe to run when nothing is running, or run twice
#
# Only processes recorded in .cluster/pids/ are stopped, and each only while it still runs the
# binary its pid file is named after: nothing else on the machine is touched.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log_tag=down
# Seconds between SIGTERM and SIGKILL.
grace="${FARGO_STOP_TIMEOUT:-20}"

# Shares up.sh's lock, so a teardown never races a start-up; up.sh itself calls this script
# with the lock already held.
if [[ -z "${FARGO_CLUSTER_LOCK_HELD:-}" ]]; then
  exec 9<"$here"
  flock -w 1800 9 || die "another up.sh or down.sh has held the cluster lock for 30 minutes"
fi

[[ -d "$state" ]] || exit 0
# The node first: its containers' mounts and pod volumes live under the state directory, which
# must not be removed through them.
FARGO_CLUSTER_LOCK_HELD=1 "$here/node.sh" down

# wait_gone SECONDS: true once every process in `stopping` has exited.
wait_gone() {
  local deadline=$((SECONDS + $1)) pid
  while true; do
    for pid in "${!stopping[@]}"; do
      runs "$pid" "${stopping[$pid]}" || unset "stopping[$pid]"
    done
    ((${#stopping[@]} > 0)) || return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# stop PIDFILE...: SIGTERM to all of them at once, so the grace period is spent once rather
# than once per component; SIGKILL to whatever outlives it.
stop() {
  local file name pid
  declare -gA stopping=()
  for file in "$@"; do
    name="$(basename "$file" .pid)"
    pid="$(cat "$file" 2>/dev/null)" || continue
    if [[ "$pid" =~ ^[0-9]+$ ]] && runs "$pid" "$name"; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      stopping[$pid]="$name"
    fi
  done
  wait_gone "$grace" && return 0
  for pid in "${!stopping[@]}"; do
    log "${stopping[$pid]} (pid $pid) outlived SIGTERM by ${grace}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait_gone 10 && return 0
  # The state is left in place: deleting it under a live process would hide the problem.
  die "still running: ${stopping[*]}; $state is kept"
}

# Every pid file rather than a fixed list, so components added to up.sh later are stopped too;
# etcd last, because the apiserver cannot finish shutting down without its storage.
shopt -s nullglob
first=()
for file in "$state"/pids/*.pid; do
  [[ "$file" == */etcd.pid ]] || first+=("$file")
done
stop "${first[@]}"
stop "$state"/pids/etcd.pid

rm -rf -- "$state"
log "cluster stopped; $state removed"

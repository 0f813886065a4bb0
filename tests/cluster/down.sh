#!/usr/bin/env bash
# Stops the local cluster that up.sh started and deletes its state, <repo>/.cluster/.
#
#   tests/cluster/down.sh   safe to run when nothing is running, or run twice
#
# Only processes recorded in .cluster/pids/ are stopped, and each only while it still runs the
# binary its pid file is named after: nothing else on the machine is touched.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="$root/.cluster"
# Seconds between SIGTERM and SIGKILL.
grace="${FARGO_STOP_TIMEOUT:-20}"

log() { printf '[down] %s\n' "$*" >&2; }

# Shares up.sh's lock, so a teardown never races a start-up; up.sh itself calls this script
# with the lock already held.
if [[ -z "${FARGO_CLUSTER_LOCK_HELD:-}" ]]; then
  exec 9<"$here"
  flock -w 1800 9 || {
    log "error: another up.sh or down.sh has held the cluster lock for 30 minutes"
    exit 1
  }
fi

[[ -d "$state" ]] || exit 0
# The node first: its containers' mounts and pod volumes live under the state directory, which
# must not be removed through them.
FARGO_CLUSTER_LOCK_HELD=1 "$here/node.sh" down

# True when pid $1 is alive and runs binary $2: a pid left from an earlier boot may since belong
# to something else.
runs() {
  local pid="$1" name="$2" argv0 stat
  IFS= read -r -d '' argv0 2>/dev/null <"/proc/$pid/cmdline" || return 1
  [[ "${argv0##*/}" == "$name" ]] || return 1
  # A zombie has exited; it only waits for a parent that may never reap it.
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

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
  log "error: still running: ${stopping[*]}; $state is kept"
  exit 1
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

# What the cluster scripts share; each sources it after `set -euo pipefail`. A script sets
# log_tag, its name in the brackets before each line it prints ([up], [node], ...), and, to use
# the process helpers, components: what the script starts, in start order. Being the script's,
# those two are not assigned here (SC2154).
# shellcheck shell=bash disable=SC2154

# The scripts' directory, the repository, and the cluster's state in it; the process helpers
# keep pids in $state/pids/ and output in $state/logs/.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="$root/.cluster"

# An $EPOCHREALTIME a script may set: each line it logs then also says the seconds since.
log_clock_start=""
# What a script may add to wait_until's errors: where to look, how to clean up.
wait_failure_hint=""
# How long each start-up step may take to become ready, in seconds.
ready_timeout="${FARGO_READY_TIMEOUT:-120}"

# seconds_since START: the seconds from START (an $EPOCHREALTIME) until now, to a tenth.
seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

log() {
  if [[ -n "$log_clock_start" ]]; then
    printf '[%s %5ss] %s\n' "$log_tag" "$(seconds_since "$log_clock_start")" "$*" >&2
  else
    printf '[%s] %s\n' "$log_tag" "$*" >&2
  fi
}

die() {
  printf '[%s] error: %s\n' "$log_tag" "$*" >&2
  exit 1
}

# The version of the sandbox image's process (node/pause.c), keyed by the hash of its source:
# the pause image of the local node and of kind's.
pause_version() { echo "fargo-$(sha256sum "$here/node/pause.c" | cut -c1-12)"; }

# --- certificates ---------------------------------------------------------------------------
# ECDSA P-256 throughout: Kubernetes accepts it for every role here, and keys generate at once.
# A key is readable by its owner alone, whatever umask the script has.
new_key() { (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null); }

# sign_leaf CA DIR NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: writes DIR/NAME.key and
# DIR/NAME.crt, signed by CA.key with CA.crt. The request carries a config of its own: openssl's
# default one differs between distributions.
sign_leaf() {
  local ca="$1" dir="$2" name="$3" subject="$4" usage="$5" sans="${6:-}"
  new_key "$dir/$name.key"
  {
    echo "[req]"
    echo "distinguished_name = dn"
    echo "prompt = no"
    echo "[dn]"
    echo "[leaf]"
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature"
    echo "extendedKeyUsage = $usage"
    echo "authorityKeyIdentifier = keyid"
    [[ -z "$sans" ]] || echo "subjectAltName = $sans"
  } >"$dir/$name.cnf"
  openssl req -new -config "$dir/$name.cnf" -key "$dir/$name.key" -subj "$subject" \
    -out "$dir/$name.csr"
  openssl x509 -req -in "$dir/$name.csr" -CA "$ca.crt" -CAkey "$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 \
    -extfile "$dir/$name.cnf" -extensions leaf -out "$dir/$name.crt" 2>/dev/null
  rm "$dir/$name.csr" "$dir/$name.cnf"
}

# --- processes ------------------------------------------------------------------------------
# True while pid $1 has not exited. A zombie has: it only waits for a parent that may never
# reap it.
not_exited() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

# True when pid $1 is alive and runs binary $2: a pid left from an earlier boot may since belong
# to something else.
runs() {
  local pid="$1" name="$2" argv0
  IFS= read -r -d '' argv0 2>/dev/null <"/proc/$pid/cmdline" || return 1
  [[ "${argv0##*/}" == "$name" ]] || return 1
  not_exited "$pid"
}

# True when pids/$1.pid names a live process that still runs binary $1.
ours() {
  local name="$1" pid
  pid="$(cat "$state/pids/$name.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  runs "$pid" "$name"
}

# True while the process started as $1 has not exited. Unlike `ours`, it does not look at the
# command line: right after `start`, the pid may still be setsid's or bash's on its way to exec.
alive() {
  local pid
  pid="$(cat "$state/pids/$1.pid" 2>/dev/null)" || return 1
  not_exited "$pid"
}

all_running() {
  local c
  for c in "${components[@]}"; do ours "$c" || return 1; done
}

# start BINARY ARGS...: runs BINARY in its own session (so the caller's Ctrl-C or process-group
# kill leaves it alone) with its output in logs/, and records its pid in pids/. The lock's
# descriptor (9, held by up.sh or by the script itself) is closed in it, or the lock would live
# as long as the cluster.
start() {
  local name="${1##*/}"
  setsid "$@" </dev/null >"$state/logs/$name.log" 2>&1 9<&- &
  echo "$!" >"$state/pids/$name.pid"
}

show_log() {
  printf '[%s] last lines of %s:\n' "$log_tag" "$state/logs/$1.log" >&2
  tail -n 40 "$state/logs/$1.log" >&2 || true
}

# wait_until WHAT LOG COMMAND...: polls COMMAND until it succeeds. Gives up, showing the end of
# the log of whatever failed, when the time is over or a started component has exited.
wait_until() {
  local what="$1" logname="$2" deadline=$((SECONDS + ready_timeout)) c
  local hint="${wait_failure_hint:+; $wait_failure_hint}"
  shift 2
  until "$@" >/dev/null 2>&1; do
    for c in "${components[@]}"; do
      if [[ -f "$state/pids/$c.pid" ]] && ! alive "$c"; then
        show_log "$c"
        die "$c exited while waiting for $what$hint"
      fi
    done
    if ((SECONDS >= deadline)); then
      show_log "$logname"
      die "$what was not ready after ${ready_timeout}s$hint"
    fi
    sleep 0.3
  done
}

#!/usr/bin/env bash
# Builds OCI images from binaries of this machine, without Docker or a registry, and imports them
# into the local node's containerd (tests/cluster/node.sh), where pods use them with
# `imagePullPolicy: Never` (or IfNotPresent).
#
#   tests/cluster/images.sh [all]     fargo.dev/fargo:dev, fargo.dev/standby:dev and
#                                     fargo.dev/echo:dev (runs cargo build),
#                                     the runtimes, NATS and versitygw
#   tests/cluster/images.sh fargo     fargo.dev/fargo:dev from target/release/fargo (and
#                                     fargo-runtime-api, the sidecar of handler functions), and
#                                     fargo.dev/standby:dev (fargo-standby, of standby pods)
#   tests/cluster/images.sh echo      fargo.dev/echo:dev from target/release/fargo-echo
#   tests/cluster/images.sh runtimes  the runtimes of handler functions (runtimes.sh):
#                                     fargo.dev/runtime-{python3.11,nodejs20.x,java17,provided}:dev,
#                                     and fargo.dev/lambda-image-example:dev, a Lambda-style image
#   tests/cluster/images.sh nats      fargo.dev/nats:dev, nats-server (build.sh nats-server): the
#                                     JetStream the chart deploys for asynchronous invocations
#   tests/cluster/images.sh versitygw fargo.dev/versitygw:dev (build.sh versitygw): the S3 server
#                                     of tests/cluster/versitygw.sh, imported again unless changed
#   tests/cluster/images.sh image NAME BINARY USER [PORT]
#                                     any binary; node.sh builds the pause image this way
#   tests/cluster/images.sh runtime-base DIR BINARY...
#                                     only the files of an image, without a program: users, /tmp
#                                     and the shared libraries the binaries need, into DIR (the
#                                     Dockerfile's RUNTIME_IMAGE in tests/e2e/kind.sh)
#
# An image is one layer: the binary, the shared libraries `ldd` names (and the dynamic loader),
# /etc/passwd, /etc/group and /tmp. Archives are written to <repo>/target/images/NAME.tar
# (an OCI image layout) and imported with `ctr images import`; with FARGO_IMAGES_NO_IMPORT=1
# they are only written. FARGO_CONTAINERD_SOCKET names another containerd.
set -euo pipefail
# The image's files are read by its non-root user, whatever umask the caller (node.sh) has.
umask 022

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
# shellcheck source-path=SCRIPTDIR source=runtimes.sh
source "$here/runtimes.sh"
log_tag=images
out="$root/target/images"
socket="${FARGO_CONTAINERD_SOCKET:-$root/.cluster/node/containerd/containerd.sock}"

# Work directories go in here, removed however the script ends.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# blob FILE: moves FILE into the layout's blobs as sha256:<digest>, prints the digest.
blob() {
  local digest
  digest="$(sha256 "$1")"
  mv "$1" "$layout/blobs/sha256/$digest"
  echo "$digest"
}

# json_array WORD...: the words as a JSON array of strings.
json_array() {
  local word sep="" out="["
  for word in "$@"; do
    word="${word//\\/\\\\}"
    out+="$sep\"${word//\"/\\\"}\""
    sep=", "
  done
  echo "$out]"
}

# base_files DIR: what every image has besides its program: users, groups, name service, /tmp.
base_files() {
  local dir="$1"
  mkdir -p "$dir/etc" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  cat >"$dir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
  cat >"$dir/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
nogroup:x:65534:
EOF
  echo "hosts: files dns" >"$dir/etc/nsswitch.conf"
}

# copy_libs DIR FILE...: the shared libraries `ldd` names for each FILE, and the dynamic loader,
# at the same paths under DIR. Those ldd finds inside DIR itself (a JRE's own) are there already,
# and so are those it cannot find but DIR holds (libjvm.so, which the JVM has loaded first).
copy_libs() {
  local dir="$1" file lib
  shift
  for file in "$@"; do
    # ldd lists `name => /path (addr)` and the loader as `/path (addr)`; a static binary makes
    # it fail with "not a dynamic executable".
    ldd "$file" >/dev/null 2>&1 || continue
    while read -r lib; do
      [[ -n "$(find "$dir" -name "$lib" -print -quit)" ]] ||
        die "$file needs $lib, which this machine lacks"
    done < <(ldd "$file" | awk '/not found/ { print $1 }')
    while read -r lib; do
      [[ "$lib" != "$dir"/* && ! -e "$dir$lib" ]] || continue
      mkdir -p "$dir$(dirname "$lib")"
      cp -L "$lib" "$dir$lib"
    done < <(ldd "$file" | grep -o '/[^ ]*')
  done
}

# rootfs DIR BINARY: the binary as /usr/local/bin/<name>, with what it needs to run.
rootfs() {
  local dir="$1" binary="$2"
  base_files "$dir"
  mkdir -p "$dir/usr/local/bin"
  cp "$binary" "$dir/usr/local/bin/"
  copy_libs "$dir" "$binary"
}

# image NAME BINARY USER [PORT]: the image of one binary, its entrypoint.
image() {
  local name="$1" binary="$2" user="$3" port="${4:-}"
  [[ -x "$binary" ]] || die "$binary is missing or not executable"
  local work
  work="$(mktemp -d -p "$scratch")"
  rootfs "$work/rootfs" "$binary"
  oci_image "$name" "$work/rootfs" --user "$user" --port "$port" \
    --entrypoint "$(json_array "/usr/local/bin/${binary##*/}")"
  rm -rf "$work"
}

# oci_image NAME ROOTFS [--user UID] [--entrypoint JSON] [--cmd JSON] [--env NAME=VALUE]...
#   [--workdir DIR] [--port PORT]
# writes $out/<repository>.tar, an image of one layer holding the files of ROOTFS, and imports
# it. A JSON is an array of strings (json_array); PATH is always in the environment.
oci_image() {
  local name="$1" dir="$2" user=65532 entrypoint=null cmd=null workdir=/ port=""
  local env=("PATH=/usr/local/bin:/usr/bin:/bin")
  shift 2
  while (($#)); do
    (($# >= 2)) || die "oci_image: $1 needs a value"
    case "$1" in
      --user) user="$2" ;;
      --entrypoint) entrypoint="$2" ;;
      --cmd) cmd="$2" ;;
      --env) env+=("$2") ;;
      --workdir) workdir="$2" ;;
      --port) port="$2" ;;
      *) die "oci_image: unknown option $1" ;;
    esac
    shift 2
  done
  [[ -d "$dir" ]] || die "$dir is not a directory"
  local work file
  work="$(mktemp -d -p "$scratch")"
  layout="$work/layout"
  mkdir -p "$layout/blobs/sha256"

  # Reproducible: the same files give the same digests.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" \
    -cf "$work/layer.tar" .
  local diff_id layer layer_size
  diff_id="$(sha256 "$work/layer.tar")"
  gzip -n "$work/layer.tar"
  layer_size="$(size "$work/layer.tar.gz")"
  layer="$(blob "$work/layer.tar.gz")"

  local exposed="{}" cmd_field=""
  [[ -z "$port" ]] || exposed="{\"$port/tcp\": {}}"
  [[ "$cmd" == null ]] || cmd_field=$'\n'"    \"Cmd\": $cmd,"
  cat >"$work/config.json" <<EOF
{
  "created": "1970-01-01T00:00:00Z",
  "architecture": "amd64",
  "os": "linux",
  "config": {
    "User": "$user:$user",
    "Entrypoint": $entrypoint,${cmd_field}
    "Env": $(json_array "${env[@]}"),
    "WorkingDir": "$workdir",
    "ExposedPorts": $exposed
  },
  "rootfs": {"type": "layers", "diff_ids": ["sha256:$diff_id"]},
  "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cluster/images.sh"}]
}
EOF
  local config_size config
  config_size="$(size "$work/config.json")"
  config="$(blob "$work/config.json")"

  cat >"$work/manifest.json" <<EOF
{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:$config",
    "size": $config_size
  },
  "layers": [{
    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
    "digest": "sha256:$layer",
    "size": $layer_size
  }]
}
EOF
  local manifest_size manifest
  manifest_size="$(size "$work/manifest.json")"
  manifest="$(blob "$work/manifest.json")"

  cat >"$layout/index.json" <<EOF
{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:$manifest",
    "size": $manifest_size,
    "platform": {"architecture": "amd64", "os": "linux"},
    "annotations": {
      "io.containerd.image.name": "$name",
      "org.opencontainers.image.ref.name": "${name##*:}"
    }
  }]
}
EOF
  echo '{"imageLayoutVersion": "1.0.0"}' >"$layout/oci-layout"

  mkdir -p "$out"
  file="$out/$(basename "${name%:*}").tar"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$file" .
  rm -rf "$work"
  log "$name: $file (manifest sha256:$manifest)"
  import "$name" "$file"
}

# import NAME FILE: imports the archive into the node's containerd, unless FARGO_IMAGES_NO_IMPORT.
import() {
  local name="$1" file="$2"
  [[ -z "${FARGO_IMAGES_NO_IMPORT:-}" ]] || return 0
  [[ -S "$socket" ]] || die "no containerd at $socket; start it with tests/cluster/node.sh up"
  # The CRI plugin sees images of the k8s.io namespace only.
  ctr --address "$socket" --namespace k8s.io images import "$file" >/dev/null
  log "$name: imported into $socket"
}

# cached_image NAME ROOTFS OPTION...: oci_image, unless target/images holds the archive of the
# same root filesystem (a cached one, whose name says what it is made of) and options.
cached_image() {
  local name="$1" dir="$2" file stamp key
  file="$out/$(basename "${name%:*}").tar"
  stamp="$file.key"
  key="$(echo "$*" | sha256sum | cut -d' ' -f1)"
  if [[ -f "$file" && "$(cat "$stamp" 2>/dev/null)" == "$key" ]]; then
    log "$name: $file is up to date"
    import "$name" "$file"
    return 0
  fi
  rm -f "$stamp"
  oci_image "$@"
  echo "$key" >"$stamp"
}

# runtimes: the images of spec.runtime (runtimes.sh), and an image made the way a Lambda-style
# container image is: a runtime with the function's code in /var/task and its handler as Cmd.
runtimes() {
  local python nodejs java provided lambda_env=(
    --env LANG=C.UTF-8 --env LAMBDA_TASK_ROOT=/var/task --env LAMBDA_RUNTIME_DIR=/var/runtime
    --workdir /var/task --user 65532
  )
  local python_entry=(/usr/bin/python3.11 -m awslambdaric)
  python="$(runtime_rootfs python)"
  # Layers are found where Lambda's runtimes look: /opt/python, /opt/nodejs, /opt/java/lib.
  local python_path=/var/runtime:/opt/python/lib/python3.11/site-packages:/opt/python
  cached_image fargo.dev/runtime-python3.11:dev "$python" "${lambda_env[@]}" \
    --env "PYTHONPATH=$python_path" --entrypoint "$(json_array "${python_entry[@]}")"

  nodejs="$(runtime_rootfs nodejs)"
  cached_image fargo.dev/runtime-nodejs20.x:dev "$nodejs" "${lambda_env[@]}" \
    --env NODE_PATH=/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task \
    --entrypoint "$(json_array /usr/bin/node /var/runtime/node_modules/aws-lambda-ric/bin/index.mjs)"

  java="$(runtime_rootfs java)"
  cached_image fargo.dev/runtime-java17:dev "$java" "${lambda_env[@]}" \
    --env JAVA_HOME=/usr/lib/jvm/java-17 --env LD_LIBRARY_PATH=/usr/lib/jvm/java-17/lib \
    --entrypoint "$(json_array /usr/lib/jvm/java-17/bin/java \
    -XX:+TieredCompilation -XX:TieredStopAtLevel=1 \
    "-Dcom.amazonaws.services.lambda.runtime.api.client.runtimeapi.NativeClient.JNI=$java_jni" \
    -cp "/var/runtime/lib/*:/var/task:/var/task/lib/*:/opt/java/lib/*" \
    com.amazonaws.services.lambda.runtime.api.client.AWSLambda)"

  provided="$(runtime_rootfs provided)"
  cached_image fargo.dev/runtime-provided:dev "$provided" "${lambda_env[@]}" \
    --entrypoint "$(json_array /var/task/bootstrap)"

  # The example's code is part of the key: the directory is named by its hash.
  local app="$root/examples/python-hello/app.py" example
  example="$cache/runtimes/lambda-image-example-$(basename "$python")-$(sha256 "$app" | cut -c1-12)"
  if ! done_dir "$example"; then
    rm -rf "$example.tmp"
    cp -al "$python" "$example.tmp"
    install -m 0644 "$app" "$example.tmp/var/task/app.py"
    finish_dir "$example.tmp" "$example"
  fi
  cached_image fargo.dev/lambda-image-example:dev "$example" "${lambda_env[@]}" \
    --env "PYTHONPATH=$python_path" --entrypoint "$(json_array "${python_entry[@]}")" \
    --cmd "$(json_array app.handler)"
}

# fargo_image: fargo.dev/fargo:dev, `fargo` its entrypoint, with `fargo-runtime-api` beside it
# (the sidecar of handler functions' pods, which run it from this image).
fargo_image() {
  local work release="$root/target/release"
  work="$(mktemp -d -p "$scratch")"
  rootfs "$work/rootfs" "$release/fargo"
  cp "$release/fargo-runtime-api" "$work/rootfs/usr/local/bin/"
  copy_libs "$work/rootfs" "$release/fargo-runtime-api"
  oci_image fargo.dev/fargo:dev "$work/rootfs" --user 65532 --port 9090 \
    --entrypoint "$(json_array /usr/local/bin/fargo)"
  rm -rf "$work"
}

# nats_image: fargo.dev/nats:dev, nats-server as its entrypoint (the chart passes every option as
# an argument) and uid 65532, the user the chart runs it as.
nats_image() {
  "$here/build.sh" nats-server
  image fargo.dev/nats:dev "$cache/bin/nats-server-$NATS_SERVER_VERSION/nats-server" 65532 4222
}

# versitygw_image: fargo.dev/versitygw:dev, versitygw as its entrypoint and uid 65532, the user
# versitygw.sh runs it as. Its root filesystem is kept by version: a rerun only imports it.
versitygw_image() {
  "$here/build.sh" versitygw
  local dir="$cache/images/versitygw-$VERSITYGW_VERSION"
  if ! done_dir "$dir"; then
    rm -rf "$dir.tmp"
    rootfs "$dir.tmp" "$cache/bin/versitygw-$VERSITYGW_VERSION/versitygw"
    finish_dir "$dir.tmp" "$dir"
  fi
  cached_image fargo.dev/versitygw:dev "$dir" --user 65532 --port 7070 \
    --entrypoint "$(json_array /usr/local/bin/versitygw)"
}

cargo_binaries() {
  log "cargo build --release $*"
  (cd "$root" && cargo build --release --locked "$@")
}

command -v ctr >/dev/null || [[ -n "${FARGO_IMAGES_NO_IMPORT:-}" ]] ||
  die "ctr is missing; install containerd (apt-get install -y containerd)"

# standby_image: fargo.dev/standby:dev, what the standby pods of functions run until woken.
standby_image() {
  image fargo.dev/standby:dev "$root/target/release/fargo-standby" 65532
}

case "${1:-all}" in
  all)
    cargo_binaries --bin fargo --bin fargo-runtime-api --bin fargo-standby --bin fargo-echo
    fargo_image
    standby_image
    image fargo.dev/echo:dev "$root/target/release/fargo-echo" 65532 8080
    runtimes
    nats_image
    versitygw_image
    ;;
  fargo)
    cargo_binaries --bin fargo --bin fargo-runtime-api --bin fargo-standby
    fargo_image
    standby_image
    ;;
  echo)
    cargo_binaries --bin fargo-echo
    image fargo.dev/echo:dev "$root/target/release/fargo-echo" 65532 8080
    ;;
  runtimes) runtimes ;;
  nats) nats_image ;;
  versitygw) versitygw_image ;;
  runtime-base)
    (($# >= 3)) || die "usage: $0 runtime-base DIR BINARY..."
    base_files "$2"
    copy_libs "$2" "${@:3}"
    ;;
  image)
    (($# >= 4)) || die "usage: $0 image NAME BINARY USER [PORT]"
    image "$2" "$3" "$4" "${5:-}"
    ;;
  *) die "usage: $0 [all|fargo|echo|runtimes|nats|versitygw|image NAME BINARY USER [PORT]|runtime-base DIR BINARY...]" ;;
esac

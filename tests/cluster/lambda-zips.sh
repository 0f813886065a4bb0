#!/usr/bin/env bash
# Builds the examples' code as Lambda takes it, a zip with the handler at its root, into
# <repo>/target/lambda/: python-hello.zip (app.py), node-hello.zip (index.mjs), java-hello.zip
# (classes compiled against aws-lambda-java-core), go-hello.zip (bootstrap, for runtime
# `provided`) and photo-resize.zip (app.py with the wheels of its requirements.txt, from PyPI).
# A zip is rebuilt only when its sources or pinned versions changed.
#
#   tests/cluster/lambda-zips.sh [python|node|java|go|photo-resize]...    all when none is named
set -euo pipefail
umask 022

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
# shellcheck source-path=SCRIPTDIR source=runtimes.sh
source "$here/runtimes.sh"
log_tag=lambda-zips
out="$root/target/lambda"
examples="$root/examples"

# sources_key EXAMPLE: the hash of the example's files (but its README and YAML), the versions
# and this script (how they are built).
sources_key() {
  (cd "$examples/$1" && find . -type f ! -name README.md ! -name '*.yaml' ! -path '*/__pycache__/*' \
    -print0 | sort -z | xargs -0 sha256sum
    cat "$here/versions.env" "$here/lambda-zips.sh") | sha256sum | cut -d' ' -f1
}

# zip_dir DIR ZIP: the files of DIR at the zip's root, with fixed times: the same files give the
# same zip.
zip_dir() {
  find "$1" -exec touch -h -d '1980-01-01T00:00:00Z' {} +
  rm -f "$2"
  (cd "$1" && find . -type f | LC_ALL=C sort | zip -q -X -@ "$2")
}

build_python_hello() { cp "$examples/python-hello/app.py" "$1/"; }

build_node_hello() { cp "$examples/node-hello/index.mjs" "$1/"; }

build_java_hello() {
  local core
  core="$(java_core_jar)"
  "$jdk/bin/javac" --release 17 -nowarn -cp "$core" -d "$1" \
    "$examples/java-hello/src/main/java/example/Hello.java"
}

build_go_hello() {
  (cd "$examples/go-hello" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath \
    -ldflags='-s -w -buildid=' -o "$1/bootstrap" .)
}

# build_photo_resize DIR: app.py and the wheels of its requirements.txt, chosen for the runtime's
# Python (CPython 3.11, x86-64 Linux, glibc 2.36) rather than for the Python that runs pip.
build_photo_resize() {
  local dir="$1"
  cp "$examples/photo-resize/app.py" "$dir/"
  /usr/bin/python3.11 -m pip install --quiet --no-cache-dir --no-compile --only-binary=:all: \
    --disable-pip-version-check --root-user-action=ignore --target "$dir" \
    --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -r "$examples/photo-resize/requirements.txt" >&2 ||
    die "pip could not install examples/photo-resize/requirements.txt (is PyPI reachable?)"
  # The scripts pip writes for this machine's Python, not the runtime's.
  rm -rf "${dir:?}/bin"
  # Byte code beside the sources, checked by nothing but its source's hash: /var/task is
  # read-only, and a cold start that compiles boto3 and Pillow first takes twice as long.
  /usr/bin/python3.11 -m compileall -q -j0 --invalidation-mode unchecked-hash -d /var/task \
    "$dir" >/dev/null || die "compiling the photo-resize bundle"
}

# example NAME: target/lambda/NAME.zip from examples/NAME, made by build_<NAME, - as _>, unless
# it was built from the same sources.
example() {
  local name="$1" zip="$out/$1.zip" key work
  key="$(sources_key "$name")"
  if [[ -f "$zip" && "$(cat "$zip.key" 2>/dev/null)" == "$key" ]]; then
    log "$zip is up to date"
    return 0
  fi
  work="$(mktemp -d)"
  "build_${name//-/_}" "$work"
  mkdir -p "$out"
  zip_dir "$work" "$zip"
  rm -rf "$work"
  echo "$key" >"$zip.key"
  log "$zip"
}

command -v zip >/dev/null || die "zip is missing; install it (apt-get install -y zip)"
(($#)) || set -- python node java go photo-resize
for name in "$@"; do
  case "$name" in
    python | node | java | go) example "$name-hello" ;;
    photo-resize) example "$name" ;;
    *) die "usage: $0 [python|node|java|go|photo-resize]..." ;;
  esac
done

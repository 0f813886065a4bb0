#!/usr/bin/env bash
# The AWS CLI (v1, pure Python) and boto3 from PyPI, in a venv of Debian's python3, for the tests
# of the Lambda Invoke API and for `make dev`'s example. Prints the venv's bin directory, which
# holds `aws` and `python` (with boto3):
#
#   PATH="$(tests/cluster/awscli.sh):$PATH" aws lambda invoke ...
#
# Made once, in $FARGO_CACHE (default ~/.cache/fargo)/awscli-<AWSCLI_VERSION>/, with the versions
# of versions.env; complete when its .done holds them, so an interrupted install, or one of other
# versions, is redone. A venv is not relocatable: it is made in place, not moved there.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log_tag=awscli
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
venv="$cache/awscli-$AWSCLI_VERSION"
# Debian's, not whatever python3 comes first on PATH: the venv keeps a link to it.
python=/usr/bin/python3
stamp="awscli $AWSCLI_VERSION boto3 $BOTO3_VERSION python $("$python" -c 'import sys; print(sys.version.split()[0])')"

if [[ "$(cat "$venv/.done" 2>/dev/null)" != "$stamp" ]]; then
  "$python" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$python cannot make a venv; install Debian's python3-venv (tests/cluster/node.sh packages lists it)"
  log "pip install awscli==$AWSCLI_VERSION boto3==$BOTO3_VERSION into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # Both pin botocore: pip refuses a pair whose pins disagree rather than break one of them.
  "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    --only-binary=:all: "awscli==$AWSCLI_VERSION" "boto3==$BOTO3_VERSION" >&2
  "$venv/bin/python" -m pip check --disable-pip-version-check >&2
  "$venv/bin/aws" --version >&2
  echo "$stamp" >"$venv/.done"
fi
echo "$venv/bin"

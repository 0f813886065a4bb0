#!/usr/bin/env bash
# versitygw, the S3 server that holds handler functions' code on the local cluster (posix
# backend, data in an emptyDir: gone with the pod). Nothing here touches the cluster by itself.
#
#   tests/cluster/versitygw.sh image      build the binary (build.sh versitygw) and the image
#                                         fargo.dev/versitygw:dev, imported into the node
#   tests/cluster/versitygw.sh manifest   print the Secret fargo-s3, Deployment and Service
#                                         versitygw in fargo-system, to pipe into kubectl apply
#
# The Secret's keys, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, are what `fargo fetch-code`
# reads; the server takes them as its root user. They are random on each `manifest` unless
# FARGO_S3_ACCESS_KEY_ID and FARGO_S3_SECRET_ACCESS_KEY are set: apply the Secret once, or
# set them. Functions reach the server at http://versitygw.fargo-system.svc:7070.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log_tag=versitygw
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
namespace=fargo-system
port=7070
# The image's non-root user (images.sh writes it into /etc/passwd).
uid=65532

image() {
  "$here/build.sh" versitygw
  "$here/images.sh" image fargo.dev/versitygw:dev \
    "$cache/bin/versitygw-$VERSITYGW_VERSION/versitygw" "$uid" "$port"
}

manifest() {
  local access="${FARGO_S3_ACCESS_KEY_ID:-fargo$(openssl rand -hex 8)}"
  local secret="${FARGO_S3_SECRET_ACCESS_KEY:-$(openssl rand -hex 24)}"
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: fargo-s3
  namespace: $namespace
  labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/part-of: fargo}
type: Opaque
stringData:
  AWS_ACCESS_KEY_ID: $access
  AWS_SECRET_ACCESS_KEY: $secret
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: versitygw
  namespace: $namespace
  labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/part-of: fargo}
spec:
  replicas: 1
  # One pod owns the emptyDir: a second would serve other, empty buckets.
  strategy: {type: Recreate}
  selector:
    matchLabels: {app.kubernetes.io/name: versitygw}
  template:
    metadata:
      labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/part-of: fargo}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: $uid
        runAsGroup: $uid
        fsGroup: $uid
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: versitygw
          image: fargo.dev/versitygw:dev
          imagePullPolicy: Never
          # Bucket notifications, for S3-triggered functions later: --event-webhook-url URL,
          # or --event-nats-url URL --event-nats-topic TOPIC (also --event-kafka-*,
          # --event-rabbitmq-*, --event-filter FILE), before the backend name.
          args: [--port, ":$port", --quiet, posix, /data]
          env:
            - name: ROOT_ACCESS_KEY_ID
              valueFrom: {secretKeyRef: {name: fargo-s3, key: AWS_ACCESS_KEY_ID}}
            - name: ROOT_SECRET_ACCESS_KEY
              valueFrom: {secretKeyRef: {name: fargo-s3, key: AWS_SECRET_ACCESS_KEY}}
          ports:
            - {name: s3, containerPort: $port, protocol: TCP}
          readinessProbe:
            tcpSocket: {port: s3}
            periodSeconds: 2
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {memory: 512Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: data, mountPath: /data}
      volumes:
        # The posix backend keeps object metadata in user xattrs, which the node's disk holds.
        - name: data
          emptyDir: {sizeLimit: 2Gi}
---
apiVersion: v1
kind: Service
metadata:
  name: versitygw
  namespace: $namespace
  labels: {app.kubernetes.io/name: versitygw, app.kubernetes.io/part-of: fargo}
spec:
  selector: {app.kubernetes.io/name: versitygw}
  ports:
    - {name: s3, port: $port, targetPort: s3, protocol: TCP}
YAML
}

case "${1:-}" in
  image) image ;;
  manifest) manifest ;;
  *) echo "usage: $0 image|manifest" >&2; exit 2 ;;
esac

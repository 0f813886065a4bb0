#!/usr/bin/env bash
# versitygw, the S3 server that holds handler functions' code on the local cluster (posix
# backend, data in an emptyDir: gone with the pod), and whose bucket notifications reach
# functions with storage triggers. Nothing here touches the cluster by itself.
#
#   tests/cluster/versitygw.sh image      build the binary (build.sh versitygw) and the image
#                                         fargo.dev/versitygw:dev, imported into the node
#                                         (images.sh versitygw; images.sh all builds it too)
#   tests/cluster/versitygw.sh manifest   print the Secret fargo-s3, Deployment and Service
#                                         versitygw, to pipe into kubectl apply
#
# The Secret's keys, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, are what `fargo fetch-code`
# reads; the server takes them as its root user. They are random on each `manifest` unless
# FARGO_S3_ACCESS_KEY_ID and FARGO_S3_SECRET_ACCESS_KEY are set: apply the Secret once, or
# set them. Functions reach the server at http://versitygw.<namespace>.svc:7070.
#
# `manifest` reads, besides:
#   FARGO_S3_NAMESPACE      where the objects go (fargo-system)
#   FARGO_S3_NATS_URL       publish every object event to this NATS server (nats://HOST:4222) ...
#   FARGO_S3_NATS_SUBJECT   ... on this subject (fargo.storage.versitygw), which the activator's
#                           stream FARGO_STORAGE (fargo.storage.>) keeps; fargo.storage.<name>
#                           reaches the namespaces of the activator's storage token <name>
#   FARGO_S3_WEBHOOK_URL    or POST every event there, e.g. the activator's
#                           http://HOST/_fargo/storage/events?token=TOKEN
#   FARGO_S3_EVENTS=nats    in fargo-system with no URL: the chart's NATS, at the address its
#                           Service gives the namespace's pods ($(FARGO_NATS_SERVICE_HOST))
# With none, the server sends no notifications. It takes one destination: both URLs is an error.
# At start it sends a test event (s3:TestEvent) and exits when the destination is unreachable,
# so its pod restarts until NATS or the webhook is up. The webhook sender posts each event once,
# with no retry; the NATS sender's client buffers while it reconnects.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
log_tag=versitygw
namespace="${FARGO_S3_NAMESPACE:-fargo-system}"
port=7070
# The image's non-root user (images.sh builds the image with it).
uid=65532

image() { "$here/images.sh" versitygw; }

# event_args: the flags of the notifications' destination, as a YAML flow sequence's items with
# a trailing comma, or nothing. versitygw reads them before the backend's name.
event_args() {
  local nats="${FARGO_S3_NATS_URL:-}" webhook="${FARGO_S3_WEBHOOK_URL:-}"
  local subject="${FARGO_S3_NATS_SUBJECT:-fargo.storage.versitygw}"
  [[ -z "$nats" || -z "$webhook" ]] ||
    die "set FARGO_S3_NATS_URL or FARGO_S3_WEBHOOK_URL, not both: versitygw sends to one destination"
  case "${FARGO_S3_EVENTS:-}" in
    "") ;;
    nats)
      if [[ -z "$nats" && -z "$webhook" ]]; then
        [[ "$namespace" == fargo-system ]] ||
          die "FARGO_S3_EVENTS=nats finds the chart's NATS in fargo-system only; set FARGO_S3_NATS_URL"
        # Expanded by the kubelet: the local cluster has no cluster DNS.
        # shellcheck disable=SC2016
        nats='nats://$(FARGO_NATS_SERVICE_HOST):$(FARGO_NATS_SERVICE_PORT_CLIENT)'
      fi
      ;;
    *) die "FARGO_S3_EVENTS is nats or unset, not ${FARGO_S3_EVENTS}" ;;
  esac
  if [[ -n "$webhook" ]]; then
    printf -- '--event-webhook-url, "%s", ' "$webhook"
  elif [[ -n "$nats" ]]; then
    printf -- '--event-nats-url, "%s", --event-nats-topic, "%s", ' "$nats" "$subject"
  fi
}

manifest() {
  local access="${FARGO_S3_ACCESS_KEY_ID:-fargo$(openssl rand -hex 8)}"
  local secret="${FARGO_S3_SECRET_ACCESS_KEY:-$(openssl rand -hex 24)}"
  local events
  events="$(event_args)"
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
          args: [--port, ":$port", --quiet, ${events}posix, /data]
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

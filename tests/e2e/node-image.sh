#!/usr/bin/env bash
# kind's node image, assembled here from Debian's packages and binaries built from the Go module
# proxy, for machines that cannot pull kindest/node (no registry): the same layout as kind's own
# base image (images/base of the kind module: its systemd units, entrypoint and containerd
# configuration), with Kubernetes and the images kubeadm runs already inside.
#
#   tests/e2e/node-image.sh    print the node image's name, building it first when the Docker
#                              engine of DOCKER_HOST (tests/e2e/docker.sh) does not have it
#
# The image is named after what goes into it (versions.env, this script, kind's files), so a
# change to any of them builds a new one and an unchanged one is reused. What it holds:
# - Debian bookworm (debootstrap) with kind's package list, plus Debian's containerd, runc and
#   CNI plugins, and ipset for kube-router;
# - kubeadm, kubelet and kubectl, and crictl (tests/cluster/build.sh kind, node.sh build);
# - preloaded images for what kubeadm starts: the control plane, etcd, CoreDNS, kube-proxy (its
#   binaries in images of a single layer, kube-proxy on this base for iptables), the pause
#   image of tests/cluster/node/pause.c, and kube-router (the CNI's NetworkPolicy enforcer);
# - a bridge CNI configuration for the pod subnet kind-config.yaml gives, in place of kindnetd,
#   which no registry here serves.
# Control-plane images keep their registry.k8s.io names (they are built from those sources at
# those versions); the rest are named fargo.dev/..., and kind-config.yaml points kubeadm and
# containerd at them.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
log_tag=node-image
# shellcheck source-path=SCRIPTDIR source=../cluster/versions.env
source "$root/tests/cluster/versions.env"
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
k8s="$cache/bin/kubernetes-$KUBERNETES_VERSION"
pause_version="$(pause_version)"

# kind's images/base package list (less NFS, iSCSI and fuse-overlayfs, which nothing here
# mounts), and what kind's base builds from source: containerd, runc, the CNI plugins.
PACKAGES=(systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2
  pigz e2fsprogs bash ca-certificates curl jq procps containerd runc containernetworking-plugins
  ipset)
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# Names kind-config.yaml repeats.
NODE_POD_CIDR=10.245.0.0/24
NODE_POD_GATEWAY=10.245.0.1
ETCD_IMAGE="fargo.dev/etcd:$ETCD_VERSION"
PAUSE_IMAGE="fargo.dev/pause:$pause_version"
KUBE_ROUTER_IMAGE="fargo.dev/kube-router:$KUBE_ROUTER_VERSION"

kind_files() {
  local dir
  dir="$(cd /tmp && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  echo "$dir/images/base/files"
}

image_name() {
  local inputs
  inputs="$(
    cat "$root/tests/cluster/versions.env" "${BASH_SOURCE[0]}" "$root/tests/cluster/node/pause.c"
  )"
  echo "fargo.dev/kind-node:$KUBERNETES_VERSION-$(sha256sum <<<"$inputs" | cut -c1-12)"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# single_binary_image NAME BINARY [ENTRYPOINT]: an image of one static binary in
# /usr/local/bin, found on PATH (kubeadm's manifests name the command) or run as ENTRYPOINT.
single_binary_image() {
  local name="$1" binary="$2" entrypoint="${3:-}" dir
  dir="$(mktemp -d)"
  mkdir -p "$dir/usr/local/bin" "$dir/tmp" "$dir/etc"
  chmod 1777 "$dir/tmp"
  cp "$binary" "$dir/usr/local/bin/"
  echo "nobody:x:65534:65534:nobody:/:/sbin/nologin" >"$dir/etc/passwd"
  local changes=(--change "ENV PATH=/usr/local/bin")
  [[ -n "$entrypoint" ]] && changes+=(--change "ENTRYPOINT [\"/usr/local/bin/$entrypoint\"]")
  tar -C "$dir" -c . | docker import "${changes[@]}" - "$name" >/dev/null
  rm -rf "$dir"
}

# on_base_image NAME BASE BINARY: BASE (the node's own rootfs, for iptables and ipset) with
# BINARY in /usr/local/bin.
on_base_image() {
  local name="$1" base="$2" binary="$3" dir
  dir="$(mktemp -d)"
  cp "$binary" "$dir/"
  printf 'FROM %s\nCOPY %s /usr/local/bin/\n' "$base" "$(basename "$binary")" >"$dir/Dockerfile"
  legacy_build "$name" "$dir"
  rm -rf "$dir"
}

# legacy_build NAME DIR: DIR/Dockerfile built by the builder every Docker has (Debian's
# docker.io has no buildx); its output only when it fails.
legacy_build() {
  local output
  output="$(DOCKER_BUILDKIT=0 docker build -t "$1" "$2" 2>&1)" || { echo "$output" >&2; die "building $1 failed"; }
}

# clear_work DIR: removes DIR, a rootfs under construction among what it holds. What a
# debootstrap that failed may have left mounted there (proc, sys, a /dev bound from this
# machine) is unmounted first, and the removal never crosses into another file system.
clear_work() {
  local mount
  [[ -e "$1" ]] || return 0
  { findmnt -rn -o TARGET | grep -F "$1/" || true; } | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
  rm -rf --one-file-system "$1"
}

build() {
  local image="$1" work="$cache/kind/work" rootfs files started_at="$EPOCHREALTIME"
  log_clock_start="$started_at"
  rootfs="$work/rootfs"
  files="$(kind_files)"
  [[ -d "$files" ]] || die "kind's files are missing from the module of kind $KIND_VERSION"
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  local binary
  for binary in "$k8s/kubeadm" "$k8s/kubelet" "$k8s/kubectl" "$k8s/kube-apiserver" \
    "$k8s/kube-controller-manager" "$k8s/kube-scheduler" "$k8s/kube-proxy" \
    "$cache/bin/etcd-$ETCD_VERSION/etcd" "$cache/bin/coredns-$COREDNS_VERSION/coredns" \
    "$cache/bin/pause-$pause_version/pause" "$cache/bin/kube-router-$KUBE_ROUTER_VERSION/kube-router" \
    "$cache/bin/crictl-$CRICTL_VERSION/crictl"; do
    [[ -x "$binary" ]] || die "$binary is missing: run tests/cluster/build.sh kind and tests/cluster/node.sh build"
  done

  clear_work "$work"
  mkdir -p "$work"
  log "debootstrap $DEBIAN_SUITE with ${#PACKAGES[@]} packages"
  debootstrap --variant=minbase --include="$(
    IFS=,
    echo "${PACKAGES[*]}"
  )" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

  log "kind $KIND_VERSION's files and services"
  install -m 0755 "$files"/usr/local/bin/* "$rootfs/usr/local/bin/"
  mkdir -p "$rootfs/kind/bin" "$rootfs/etc/containerd" "$rootfs/etc/systemd/system/kubelet.service.d"
  install -m 0644 "$files"/kind/README.txt "$rootfs/kind/"
  install -m 0755 "$files"/kind/bin/* "$rootfs/kind/bin/"
  install -m 0644 "$files"/etc/crictl.yaml "$rootfs/etc/"
  install -m 0644 "$files"/etc/containerd/* "$rootfs/etc/containerd/"
  install -m 0644 "$files"/etc/default/* "$rootfs/etc/default/"
  install -m 0644 "$files"/etc/sysctl.d/* "$rootfs/etc/sysctl.d/"
  install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice \
    "$rootfs/etc/systemd/system/"
  install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* \
    "$rootfs/etc/systemd/system/kubelet.service.d/"
  # As images/base/Dockerfile does: no units but kind's own, no kernel log in the journal.
  find "$rootfs/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$rootfs"/lib/systemd/system/multi-user.target.wants/* \
    "$rootfs"/etc/systemd/system/*.wants/* \
    "$rootfs"/lib/systemd/system/local-fs.target.wants/* \
    "$rootfs"/lib/systemd/system/sockets.target.wants/*udev* \
    "$rootfs"/lib/systemd/system/sockets.target.wants/*initctl* \
    "$rootfs"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$rootfs/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$rootfs/sbin/init"
  chroot "$rootfs" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
  chroot "$rootfs" systemctl mask systemd-binfmt.service >/dev/null 2>&1
  mkdir -p "$rootfs/etc/kubernetes/manifests"
  # kind's units start containerd from /usr/local/bin; Debian's is in /usr/bin.
  ln -sf /usr/bin/containerd "$rootfs/usr/local/bin/containerd"
  ctr oci spec |
    jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
    jq 'del(.process.rlimits)' >"$rootfs/etc/containerd/cri-base.json"
  mkdir -p "$rootfs/opt/cni/bin" "$rootfs/etc/cni/net.d"
  for binary in "$rootfs"/usr/lib/cni/*; do
    ln -sf "/usr/lib/cni/${binary##*/}" "$rootfs/opt/cni/bin/${binary##*/}"
  done
  # The pod network: a bridge on the node, its addresses from the node's podCIDR (the first
  # /24 of POD_SUBNET, the only node's). kube-router enforces NetworkPolicies on it.
  cat >"$rootfs/etc/cni/net.d/10-fargo.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "fargo",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "fargo0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
EOF

  log "the images kubeadm and the node run"
  local base="fargo.dev/kind-base:${image##*:}"
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  local kubernetes_images=(kube-apiserver kube-controller-manager kube-scheduler)
  local images=() name
  for name in "${kubernetes_images[@]}"; do
    single_binary_image "registry.k8s.io/$name:$KUBERNETES_VERSION" "$k8s/$name"
    images+=("registry.k8s.io/$name:$KUBERNETES_VERSION")
  done
  on_base_image "registry.k8s.io/kube-proxy:$KUBERNETES_VERSION" "$base" "$k8s/kube-proxy"
  single_binary_image "$ETCD_IMAGE" "$cache/bin/etcd-$ETCD_VERSION/etcd"
  single_binary_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" \
    "$cache/bin/coredns-$COREDNS_VERSION/coredns" coredns
  single_binary_image "$PAUSE_IMAGE" "$cache/bin/pause-$pause_version/pause" pause
  on_base_image "$KUBE_ROUTER_IMAGE" "$base" "$cache/bin/kube-router-$KUBE_ROUTER_VERSION/kube-router"
  images+=("registry.k8s.io/kube-proxy:$KUBERNETES_VERSION" "$ETCD_IMAGE"
    "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$PAUSE_IMAGE" "$KUBE_ROUTER_IMAGE")
  docker save "${images[@]}" >"$work/images.tar"
  docker rmi "${images[@]}" "$base" >/dev/null

  # Into the node's containerd store, as `kind load` would put them, by a containerd of the
  # machine's run on the rootfs.
  log "preloading ${#images[@]} images into the node's containerd"
  local address="$work/containerd.sock" pid
  echo 'disabled_plugins = ["io.containerd.grpc.v1.cri"]' >"$work/containerd.toml"
  containerd --root "$rootfs/var/lib/containerd" --state "$work/containerd-state" \
    --address "$address" --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [[ -S "$address" ]] && break; sleep 0.1; done
  ctr --address "$address" --namespace k8s.io images import --all-platforms --digests \
    --snapshotter overlayfs "$work/images.tar" >/dev/null ||
    { kill "$pid"; tail -n 20 "$work/containerd.log" >&2; die "importing the images failed"; }
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -f "$work/images.tar"

  log "Kubernetes $KUBERNETES_VERSION"
  install -m 0755 "$k8s/kubeadm" "$k8s/kubelet" "$k8s/kubectl" "$rootfs/usr/bin/"
  install -m 0755 "$cache/bin/crictl-$CRICTL_VERSION/crictl" "$rootfs/usr/local/bin/"
  echo "$KUBERNETES_VERSION" >"$rootfs/kind/version"

  log "importing $image"
  tar -C "$rootfs" -c . | docker import - "$image-rootfs" >/dev/null
  clear_work "$rootfs"
  # What images/base/Dockerfile ends with (`docker import` cannot set a stop signal).
  cat >"$work/Dockerfile" <<EOF
FROM $image-rootfs
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
EOF
  legacy_build "$image" "$work"
  docker rmi "$image-rootfs" >/dev/null
  clear_work "$work"
  log "$image built in $(seconds_since "$started_at")s"
}

image="$(image_name)"
if ! have_image "$image"; then
  build "$image"
  # Node images of other inputs are not used again.
  docker images --format '{{.Repository}}:{{.Tag}}' fargo.dev/kind-node | grep -vx "$image" |
    xargs -r docker rmi >/dev/null || true
fi
echo "$image"

#!/usr/bin/env bash
# Knative Serving as a peer of fargo, for measuring the two side by side: Knative Serving's core
# beside fargo on the local cluster (tests/cluster/), built from source like the rest of that
# cluster: no registry, no ingress layer, no cluster DNS.
#
#   benches/peers/knative.sh build       knative.dev/serving v0.50.0's five commands (activator,
#                                        autoscaler, controller, queue, webhook) from the Go module
#                                        proxy, static and stripped, into
#                                        $FARGO_CACHE/bin/knative-serving-v0.50.0/ (a `.done`
#                                        marker written last; ~8 min cold on 2 cores)
#   benches/peers/knative.sh images      build, then dev.local/knative/<command>:v0.50.0 with
#                                        tests/cluster/images.sh (target/images/<command>.tar),
#                                        imported into the local node's containerd unless
#                                        FARGO_IMAGES_NO_IMPORT=1
#   benches/peers/knative.sh manifests [FILE|-]
#                                        Knative Serving core for this cluster (CRDs, namespace,
#                                        RBAC, config, Deployments, webhooks), checked offline, into
#                                        FILE (default target/peers/knative-serving-v0.50.0.yaml)
#                                        or, with -, to stdout
#   benches/peers/knative.sh up          images (imported), manifests, then applies them to the
#                                        cluster in KUBECONFIG (default: the local cluster's) and
#                                        waits for the knative-serving Deployments to be Available
#   benches/peers/knative.sh down        deletes every Knative Service, Configuration, Route and
#                                        DomainMapping, then what `up` applied
#
# Status: every subcommand has run on the local cluster. After `up` (26 s with the binaries
# cached), the four Deployments are Available, a Knative Service of fargo.dev/echo:dev gets a
# Ready Revision, and a GET to the activator Service with the two headers below is answered by the
# echo pod through its queue-proxy; `down` (2 min) leaves no Knative namespace or CRD.
#
# What the manifests change in upstream's config/core/ (module knative.dev/serving@v0.50.0):
# - The six files that are symlinks upstream, which module zips leave out, come from the
#   knative.dev/networking and knative.dev/caching modules at the versions serving's go.mod
#   requires (the `links` table below).
# - Every ko:// image is dev.local/knative/<command>:v0.50.0, with `imagePullPolicy: Never` in
#   the Deployments. dev.local is in config-deployment's registries-skipping-tag-resolving, so
#   the controller resolves no digest for the queue-proxy image; fargo.dev is added to the list,
#   so revisions can run the images tests/cluster/images.sh builds (fargo.dev/echo:dev).
# - config-network: `mesh-compatibility-mode: "disabled"`: the autoscaler scrapes pods and the
#   activator reaches them by pod IP, never through a Service name.
# - No cluster DNS. The activator streams its statistics to ws://autoscaler.knative-serving.svc.
#   cluster.local:8080 (cmd/activator/main.go), and is not Ready without that link: the
#   autoscaler Service gets a pinned clusterIP, 10.96.0.200 (KNATIVE_AUTOSCALER_IP), and the
#   activator pods a hostAliases entry for that name. The address is in the lower band of the
#   local cluster's service range 10.96.0.0/16 (its first 256 addresses), which the API server
#   hands to Services without a clusterIP of their own only once the upper band is full
#   (pkg/registry/core/service/ipallocator of Kubernetes). Before scaling a revision to zero, the
#   autoscaler probes the revision's own Service by name (<name>.<namespace>.svc.cluster.local,
#   pkg/reconciler/autoscaling/kpa/scaler.go), which no fixed alias can cover: config-autoscaler
#   sets `target-burst-capacity: "-1"`, which keeps the activator in every request's path (as
#   fargo's is) and skips that probe. With the activator always in the path, the grace a revision
#   waits behind it before going to zero (`scale-to-zero-grace-period`, 30 s by default) guards
#   nothing: it is 1 s, so that the functions benchmark's cold starts (a revision whose
#   `autoscaling.knative.dev/window` is 6 s, the least allowed) come round every few seconds.
#   `allow-zero-initial-scale: "true"` lets controller_scale's Knative Services start at zero
#   instances, as its functions do, so that no pod is started for them.
#   Autoscalers reach each other by bucket Service names only
#   with several replicas, and after trying the pod IP (pkg/autoscaler/statforwarder); there is
#   one. The API server reaches the webhook through a service reference, by ClusterIP.
# - Only when asked, for controller_scale at 10,000 Knative Services: KNATIVE_CONTROLLER_QPS=N
#   sets the controller's client rate limit (KUBE_API_QPS=N, KUBE_API_BURST=2N, read by
#   knative.dev/pkg's environment/client_config.go; unset, it is 5 per controller, about 45 per
#   second, so 10,000 Services take hours), and KNATIVE_CONTROLLER_MEMORY (say 4Gi) its memory
#   limit in place of upstream's 1000Mi, which a controller with 10,000 Services outgrows.
# - No ingress: Routes and Knative Services never become Ready (no KIngress is reconciled), but
#   Revisions do, and requests reach a revision through the activator Service's ClusterIP (port
#   80) with the headers `Knative-Serving-Revision: <revision>` and `Knative-Serving-Namespace:
#   <namespace>` (pkg/activator/handler/context_handler.go).
#
# Needs: Go (build), python3 (manifests; PyYAML, when installed, for the deeper check), the
# cluster's kubectl in $FARGO_CACHE (tests/cluster/build.sh), and for `up`/`down` a running
# cluster (tests/cluster/up.sh), root and containerd's ctr for the import.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../../tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tests/cluster/lib.sh"
log_tag=knative
# shellcheck source-path=SCRIPTDIR source=../../tests/cluster/versions.env
source "$here/versions.env"

# v0.51.0 does not build from the module proxy: the proxy refuses the knative.dev/pkg,
# networking and caching versions it pins.
version=v0.50.0
module=knative.dev/serving
commands=(activator autoscaler controller queue webhook)
cache="${FARGO_CACHE:-$HOME/.cache/fargo}"
bin="$cache/bin/knative-serving-$version"
autoscaler_ip="${KNATIVE_AUTOSCALER_IP:-10.96.0.200}"
controller_qps="${KNATIVE_CONTROLLER_QPS:-}"
controller_memory="${KNATIVE_CONTROLLER_MEMORY:-}"
[[ -z "$controller_qps" || "$controller_qps" =~ ^[1-9][0-9]*$ ]] ||
  die "KNATIVE_CONTROLLER_QPS must be a whole number of requests per second"
[[ -z "$controller_memory" || "$controller_memory" =~ ^[1-9][0-9]*(Mi|Gi)$ ]] ||
  die "KNATIVE_CONTROLLER_MEMORY must be a quantity in Mi or Gi (say 4Gi)"
default_manifest="$root/target/peers/knative-serving-$version.yaml"
kubeconfig="${KUBECONFIG:-$state/kubeconfig}"
ready_timeout="${FARGO_READY_TIMEOUT:-300}"

# The symlinks of upstream's config/core/ (path there: module and path of their target).
links=(
  "300-imagecache.yaml:knative.dev/caching:config/image.yaml"
  "300-resources/certificate.yaml:knative.dev/networking:config/certificate.yaml"
  "300-resources/domain-claim.yaml:knative.dev/networking:config/domain-claim.yaml"
  "300-resources/ingress.yaml:knative.dev/networking:config/ingress.yaml"
  "300-resources/serverlessservice.yaml:knative.dev/networking:config/serverlessservice.yaml"
  "configmaps/network.yaml:knative.dev/networking:config/config-network.yaml"
)

build() {
  [[ -f "$bin/.done" ]] && return 0
  local pkgs=() c start="$SECONDS"
  for c in "${commands[@]}"; do pkgs+=("$module/cmd/$c@$version"); done
  log "building ${commands[*]} of $module $version (a cold build takes a while)"
  mkdir -p "$bin"
  # serving's go.mod has no replace directives: the commands install directly.
  CGO_ENABLED=0 GOBIN="$bin" go install -trimpath -ldflags "-s -w" "${pkgs[@]}"
  touch "$bin/.done"
  log "built in $((SECONDS - start))s: $bin"
}

# The port each image declares (its main listener; the manifests name every port).
port_of() {
  case "$1" in
    activator | queue) echo 8012 ;;
    autoscaler) echo 8080 ;;
    controller) echo 9090 ;;
    webhook) echo 8443 ;;
  esac
}

images() {
  build
  local c
  for c in "${commands[@]}"; do
    "$here/images.sh" image "dev.local/knative/$c:$version" "$bin/$c" 65532 "$(port_of "$c")"
  done
}

# module_field MODULE@VERSION FIELD: a field of `go mod download -json` (Dir, GoMod).
module_field() {
  (cd /tmp && go mod download -json "$1") |
    sed -n "s/.*\"$2\": \"\(.*\)\".*/\1/p"
}

# required_version GOMOD MODULE: the version of MODULE that the go.mod file GOMOD requires.
required_version() {
  awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}

manifests() {
  local file="${1:-$default_manifest}" dir gomod link path mod target ver out
  dir="$(module_field "$module@$version" Dir)"
  gomod="$(module_field "$module@$version" GoMod)"
  [[ -d "$dir/config/core" ]] || die "no config/core in $module@$version ($dir)"
  declare -A mod_dirs=()
  local link_args=()
  for link in "${links[@]}"; do
    IFS=: read -r path mod target <<<"$link"
    if [[ -z "${mod_dirs[$mod]:-}" ]]; then
      ver="$(required_version "$gomod" "$mod")"
      [[ -n "$ver" ]] || die "$module@$version does not require $mod"
      mod_dirs[$mod]="$(module_field "$mod@$ver" Dir)"
      log "upstream's symlinks into $mod: files of $mod@$ver"
    fi
    link_args+=("$path=${mod_dirs[$mod]}/$target")
  done
  if [[ "$file" == - ]]; then
    out="$(mktemp)"
  else
    mkdir -p "$(dirname "$file")"
    out="$file.tmp"
  fi
  python3 - "$dir/config/core" "$version" "$autoscaler_ip" "$controller_qps" "$controller_memory" \
    "$out" "${link_args[@]}" <<'PY'
import os, re, sys

core, version, autoscaler_ip, controller_qps, controller_memory, out = sys.argv[1:7]
links = dict(arg.split("=", 1) for arg in sys.argv[7:])
commands = {"activator", "autoscaler", "controller", "queue", "webhook"}

# Files in the order `ko resolve -f config/core/` takes them: each directory's entries by name.
files = {}
for d, _, names in os.walk(core):
    for n in names:
        if n.endswith(".yaml"):
            p = os.path.join(d, n)
            files[os.path.relpath(p, core)] = p
for rel, target in links.items():
    if rel in files:
        sys.exit(f"{rel} is in the module already")
    if not os.path.isfile(target):
        sys.exit(f"{target} (for {rel}) is missing")
    files[rel] = target

def kind_name(doc):
    kind = re.search(r"^kind:\s*(\S+)", doc, re.M)
    name = re.search(r"^metadata:\n(?:[ \t].*\n)*?  name:\s*(\S+)", doc, re.M)
    return (kind and kind.group(1), name and name.group(1))

def insert_after(doc, pattern, lines, what):
    """Inserts LINES (indented like the matched line, or as given) after the one line matching."""
    matches = list(re.finditer(pattern, doc, re.M))
    if len(matches) != 1:
        sys.exit(f"{what}: {len(matches)} lines match {pattern!r}, expected 1")
    m = matches[0]
    indent = m.group("indent") if "indent" in m.groupdict() else ""
    text = "".join(f"{indent}{line}\n" for line in lines)
    return doc[: m.end() + 1] + text + doc[m.end() + 1 :]

def image(m):
    if m.group(1) not in commands:
        sys.exit(f"unknown command ko://knative.dev/serving/cmd/{m.group(1)}")
    return f"dev.local/knative/{m.group(1)}:{version}"

docs = []
for rel in sorted(files, key=lambda p: p.split(os.sep)):
    with open(files[rel]) as f:
        text = f.read()
    for doc in re.split(r"^---[ \t]*$\n?", text, flags=re.M):
        if not re.search(r"^[^#\s]", doc, re.M):
            continue  # comments only
        doc = doc.rstrip("\n") + "\n"
        kind, name = kind_name(doc)
        what = f"{rel}: {kind} {name}"
        doc = re.sub(r"ko://knative\.dev/serving/cmd/([\w-]+)", image, doc)
        doc = re.sub(r"^(\s+app\.kubernetes\.io/version:) devel$", rf"\1 {version}", doc, flags=re.M)
        if "ko://" in doc:
            sys.exit(f"{what}: a ko:// reference is left")
        if kind == "Deployment":
            images = r"^(?P<indent>[ \t]+)image: dev\.local/knative/.*$"
            if re.search(images, doc, re.M):
                doc = insert_after(doc, images, ["imagePullPolicy: Never"], what)
        if (kind, name) == ("ConfigMap", "config-network"):
            doc = insert_after(doc, r"^data:$", ['  mesh-compatibility-mode: "disabled"'], what)
        if (kind, name) == ("ConfigMap", "config-autoscaler"):
            doc = insert_after(doc, r"^data:$", [
                '  target-burst-capacity: "-1"',
                '  scale-to-zero-grace-period: "1s"',
                '  allow-zero-initial-scale: "true"',
            ], what)
        if (kind, name) == ("ConfigMap", "config-deployment"):
            doc = insert_after(
                doc, r"^data:$",
                ['  registries-skipping-tag-resolving: "kind.local,ko.local,dev.local,fargo.dev"'], what)
        if (kind, name) == ("Service", "autoscaler"):
            doc = insert_after(doc, r"^spec:$", [f"  clusterIP: {autoscaler_ip}"], what)
        if (kind, name) == ("Deployment", "activator"):
            doc = insert_after(doc, r"^(?P<indent>[ \t]+)serviceAccountName: activator$", [
                "hostAliases:",
                f"- ip: {autoscaler_ip}",
                "  hostnames: [autoscaler.knative-serving.svc.cluster.local]",
            ], what)
        if (kind, name) == ("Deployment", "controller") and controller_qps:
            doc = insert_after(
                doc, r"^(?P<indent>[ \t]+)- name: CONFIG_OBSERVABILITY_NAME\n[ \t]+value: .*$", [
                    "- name: KUBE_API_QPS",
                    f'  value: "{controller_qps}"',
                    "- name: KUBE_API_BURST",
                    f'  value: "{2 * int(controller_qps)}"',
                ], what)
        if (kind, name) == ("Deployment", "controller") and controller_memory:
            doc, n = re.subn(r"^(\s+limits:\n(?:\s+cpu: \S+\n)?\s+memory:) 1000Mi$",
                             rf"\1 {controller_memory}", doc, flags=re.M)
            if n != 1:
                sys.exit(f"{what}: {n} memory limits of 1000Mi, expected 1")
        docs.append(f"# Source: config/core/{rel}\n{doc}")

with open(out, "w") as f:
    f.write(f"# Knative Serving {version} core for fargo's local cluster "
            "(benches/peers/knative.sh manifests)\n")
    f.write("---\n".join(docs))
PY
  check_manifests "$out"
  if [[ "$file" == - ]]; then
    cat "$out"
    rm -f "$out"
  else
    mv "$out" "$file"
    log "manifests: $file"
  fi
}

# check_manifests FILE: what must hold of the rendered YAML, checked without a cluster.
check_manifests() {
  local file="$1"
  ! grep -n 'ko://' "$file" || die "$file: ko:// references are left"
  ! grep -nE '^\s*(- )?image: \S' "$file" | grep -v 'image: dev\.local/knative/' ||
    die "$file: images other than dev.local/knative/"
  # kubectl's own decoder, offline (--local): every document is an object it can read.
  local kubectl="$cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl" objects
  if [[ -x "$kubectl" ]]; then
    objects="$("$kubectl" --kubeconfig /dev/null label --local -f "$file" peers.fargo.dev/check=1 \
      -o name)" || die "$file: kubectl cannot read it"
    log "kubectl reads $(wc -l <<<"$objects") objects"
  fi
  python3 - "$file" "$version" "$autoscaler_ip" "$controller_qps" "$controller_memory" <<'PY'
import sys
try:
    import yaml
except ImportError:
    print("[knative] PyYAML is not installed: the YAML is not parsed", file=sys.stderr)
    sys.exit(0)

file, version, ip, qps, memory = sys.argv[1:]
with open(file) as f:
    docs = [d for d in yaml.safe_load_all(f) if d is not None]
objects = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
if len(objects) != len(docs):
    sys.exit(f"{file}: an object appears twice")

def fail(msg):
    sys.exit(f"{file}: {msg}")

for (kind, ns, name), d in objects.items():
    if not d.get("apiVersion"):
        fail(f"{kind} {name} has no apiVersion")
    if kind == "Deployment":
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            if c["image"] != f"dev.local/knative/{name}:{version}" or c.get("imagePullPolicy") != "Never":
                fail(f"Deployment {name}: container {c['name']} has {c['image']}, {c.get('imagePullPolicy')}")

ns = "knative-serving"
cfg = lambda name: objects[("ConfigMap", ns, name)]["data"]
checks = {
    "queue-sidecar-image": cfg("config-deployment").get("queue-sidecar-image") == f"dev.local/knative/queue:{version}",
    "queue-proxy Image": objects[("Image", ns, "queue-proxy")]["spec"]["image"] == f"dev.local/knative/queue:{version}",
    "mesh-compatibility-mode": cfg("config-network").get("mesh-compatibility-mode") == "disabled",
    "target-burst-capacity": cfg("config-autoscaler").get("target-burst-capacity") == "-1",
    "allow-zero-initial-scale": cfg("config-autoscaler").get("allow-zero-initial-scale") == "true",
    "autoscaler clusterIP": objects[("Service", ns, "autoscaler")]["spec"].get("clusterIP") == ip,
    "activator hostAliases": objects[("Deployment", ns, "activator")]["spec"]["template"]["spec"].get("hostAliases")
        == [{"ip": ip, "hostnames": ["autoscaler.knative-serving.svc.cluster.local"]}],
}
controller = objects[("Deployment", ns, "controller")]["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e.get("value") for e in controller["env"]}
checks["controller's client rate"] = (env.get("KUBE_API_QPS"), env.get("KUBE_API_BURST")) == (
    (qps, str(2 * int(qps))) if qps else (None, None))
checks["controller's memory limit"] = controller["resources"]["limits"]["memory"] == (memory or "1000Mi")
for what, ok in checks.items():
    if not ok:
        fail(f"{what} is not as rendered")
crds = sum(1 for k in objects if k[0] == "CustomResourceDefinition")
print(f"[knative] PyYAML reads {len(docs)} objects, {crds} of them CRDs, as rendered", file=sys.stderr)
PY
}

kubectl_bin() {
  local k="$cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
  [[ -x "$k" ]] || k="$(command -v kubectl)" || die "no kubectl; run tests/cluster/build.sh kubernetes"
  echo "$k"
}

up() {
  local kubectl
  kubectl="$(kubectl_bin)"
  [[ -f "$kubeconfig" ]] || die "no kubeconfig at $kubeconfig; start the cluster (tests/cluster/up.sh)"
  images
  manifests "$default_manifest"
  local k=("$kubectl" --kubeconfig "$kubeconfig")
  # The CRDs first: the same file holds objects of their kinds (Image, Certificate).
  log "applying the CRDs"
  # Apart from the rest: kubectl maps every object of a file it applies, even those a selector
  # leaves out, and the file also holds objects of these CRDs (an Image, a Certificate).
  local crds="${default_manifest%.yaml}.crds.yaml"
  awk 'BEGIN { RS = "\n---\n"; ORS = "\n---\n" } /(^|\n)kind: CustomResourceDefinition\n/' \
    "$default_manifest" >"$crds"
  "${k[@]}" apply --server-side --force-conflicts -f "$crds" >/dev/null
  "${k[@]}" wait --for=condition=Established --timeout=60s crd -l knative.dev/crd-install=true \
    >/dev/null
  log "applying Knative Serving $version"
  "${k[@]}" apply --server-side --force-conflicts -f "$default_manifest" >/dev/null
  log "waiting for the knative-serving Deployments to be Available"
  "${k[@]}" -n knative-serving wait deployment --all --for=condition=Available \
    --timeout="${ready_timeout}s" ||
    die "knative-serving is not Available after ${ready_timeout}s: $kubectl --kubeconfig $kubeconfig -n knative-serving get pods"
  log "Knative Serving $version is up; activator: $("${k[@]}" -n knative-serving get service \
    activator-service -o jsonpath='{.spec.clusterIP}'):80"
}

down() {
  local kubectl
  kubectl="$(kubectl_bin)"
  [[ -f "$kubeconfig" ]] || die "no kubeconfig at $kubeconfig"
  [[ -f "$default_manifest" ]] || manifests "$default_manifest"
  local k=("$kubectl" --kubeconfig "$kubeconfig")
  # Knative's own objects first, while its controller can still remove their finalizers.
  if "${k[@]}" get crd services.serving.knative.dev >/dev/null 2>&1; then
    log "deleting every Knative Service, Configuration, Route and DomainMapping"
    "${k[@]}" delete --all --all-namespaces --ignore-not-found --timeout="${ready_timeout}s" \
      services.serving.knative.dev,configurations.serving.knative.dev,routes.serving.knative.dev,domainmappings.serving.knative.dev \
      >/dev/null
  fi
  # The webhook configurations before the webhook: without it they would refuse what follows.
  "${k[@]}" delete --ignore-not-found \
    mutatingwebhookconfiguration,validatingwebhookconfiguration \
    -l app.kubernetes.io/name=knative-serving >/dev/null
  log "deleting Knative Serving $version"
  "${k[@]}" delete --ignore-not-found --timeout="${ready_timeout}s" -f "$default_manifest" >/dev/null
  log "Knative Serving $version removed"
}

case "${1:-}" in
  build) build ;;
  images) images ;;
  manifests) manifests "${2:-}" ;;
  up) up ;;
  down) down ;;
  *) die "usage: $0 build|images|manifests [FILE|-]|up|down" ;;
esac

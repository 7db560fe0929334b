#!/usr/bin/env bash
# Install the pinned Helm the tests of deploy/helm use, from the Go module proxy
# (`go install helm.sh/helm/v3/cmd/helm@VERSION`: no other download site is reachable
# here), and print the binary's path on stdout.
#
#   scripts/ci/install-helm.sh            # -> /var/cache/ddc/helm/v3.21.4-k8s1.36/bin/helm
#   HELM=$(scripts/ci/install-helm.sh) && "$HELM" version
#
# Everything Go writes (module cache, build cache, the binary) stays under
# DDC_HELM_CACHE (default /var/cache/ddc/helm, which scripts/ci/cold-start.sh removes):
# the binary is never committed and nothing lands in ~/go. A cached binary of the pinned
# version is reused (a few ms); a cold install compiles Helm (see tests/deploy/README.md
# for the measured time). Needs Go >= 1.24 on PATH.
set -euo pipefail

version=v3.21.4
# The Kubernetes version `helm template` / `helm lint` assume without a cluster: Helm's
# Makefile stamps in that of its client-go (v0.36 in v3.21.4's go.mod); go install alone
# would leave v1.20, which the chart's kubeVersion (>= 1.25) refuses.
kube_minor=36
cache=${DDC_HELM_CACHE:-/var/cache/ddc/helm}
dir="$cache/$version-k8s1.$kube_minor"
bin="$dir/bin/helm"
log() { printf '[install-helm] %s\n' "$*" >&2; }

mkdir -p "$cache"
exec 9>"$cache/install.lock"
flock 9
# `helm version --short` prints the version, plus "+COMMIT" when one was stamped in.
is_pinned() { [[ -x $bin && $("$bin" version --short 2>/dev/null) =~ ^$version(\+.*)?$ ]]; }
if is_pinned; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null || { log "go not found on PATH (Helm is built from the Go module proxy)"; exit 1; }
start=$(date +%s)
log "go install helm.sh/helm/v3/cmd/helm@$version (module and build caches in $cache)"
# CGO off: a static binary, no C toolchain involved. -trimpath and -s -w: smaller, and
# the binary does not name this machine's paths. -X sets what Helm's own Makefile stamps
# in: its version (go install alone leaves "v3.21") and the Kubernetes version above.
GOPATH="$dir" GOBIN="$dir/bin" GOMODCACHE="$cache/mod" GOCACHE="$cache/build" \
    GOFLAGS=-modcacherw CGO_ENABLED=0 GOTOOLCHAIN=local \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version \
        -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor \
        -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kube_minor" \
    "helm.sh/helm/v3/cmd/helm@$version"
is_pinned || { log "$bin does not report $version"; exit 1; }
# The build cache is only needed to rebuild; the module cache is kept for the next one.
rm -rf "$cache/build"
log "installed $("$bin" version --short) in $(($(date +%s) - start)) s"
echo "$bin"

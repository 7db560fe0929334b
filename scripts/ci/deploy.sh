#!/usr/bin/env bash
# CI for the Kubernetes deploy surface (deploy/container, deploy/helm), as root, after
# the molecule amd64 step (which leaves the base image and the wheelhouse it reuses):
#
#   scripts/ci/deploy.sh            # the native image + tests/deploy (lint, template,
#                                   # schema, sidecar, image, podman kube play)
#   scripts/ci/deploy.sh arm64      # only the arm64 image: built under qemu-user, the
#                                   # native self-check run at build time, then ddc --version
#
# Installs what is missing: catatonit (podman builds its pod "pause" image from it; no
# registry to pull one from) and the pinned Helm (scripts/ci/install-helm.sh, from the Go
# module proxy, cached under /var/cache/ddc/helm). Measured times: tests/deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
log() { printf '[deploy %s] %s\n' "$(date +%T)" "$*" >&2; }
start=$(date +%s)

if [[ ${1:-} == arm64 ]]; then
    image=$(deploy/container/build.sh arm64)
    podman run --rm --arch arm64 --network none --no-healthcheck "$image" --version
    log "arm64 image $image built and self-checked in $(($(date +%s) - start)) s"
    exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [arm64]" >&2; exit 2; }

# shellcheck source=scripts/ci/lib/apt.sh
. scripts/ci/lib/apt.sh
ddc_apt_install catatonit
log "helm: $(scripts/ci/install-helm.sh) ($(($(date +%s) - start)) s)"
log "image: $(deploy/container/build.sh "$(dpkg --print-architecture)") ($(($(date +%s) - start)) s)"
.venv/bin/python -m pytest -q -p no:cacheprovider -rs tests/deploy
log "done in $(($(date +%s) - start)) s"

#!/usr/bin/env bash
# Build the ddc container image (deploy/container/Containerfile) for one architecture,
# or both plus a multi-arch manifest list, with podman and nothing from any registry.
#
#   deploy/container/build.sh amd64     # -> localhost/ddc:VERSION-amd64
#   deploy/container/build.sh arm64     # -> localhost/ddc:VERSION-arm64 (RUN steps under qemu-user)
#   deploy/container/build.sh all       # both, then the manifest list localhost/ddc:VERSION
#
# VERSION is the project's (pyproject.toml). Prints the image name(s) on stdout.
#
# Inputs, all made locally:
#   * the base image localhost/ddc-trixie-ARCH (scripts/ci/build-base-image.sh: a no-op
#     when up to date; in CI the molecule scenarios have made it already);
#   * the wheelhouse for ARCH / Python 3.13 (scripts/build-wheelhouse.sh: the ddc wheel from
#     its cache, built and self-checked on ARCH when the sources changed, plus the
#     dependencies' wheels), written to build/container/ARCH/ so that a molecule run
#     reading build/wheelhouse-ARCH-py3.13 at the same time is not disturbed;
#   * pip's wheel (pinned below; from pip's cache), which installs the others.
# `podman build --pull=never --network=none`: a missing base image is an error, never a
# download, and no RUN step can reach anything.
#
# Cache: the image carries the label ddc.input-hash (base image id, every wheel, pip, the
# Containerfile and this script). When the tagged image has that hash nothing is built
# (about a second); DDC_CONTAINER_REBUILD=1 forces a build. Measured times: tests/deploy/README.md.
# Needs root, podman (scripts/ci/setup-podman.sh; for arm64 also its binfmt_misc handler).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/deploy/container"
pip_version=25.2
pyver=3.13
PYTHON=${PYTHON:-python3}
log() { printf '[container %s] %s\n' "${arch:-}" "$*" >&2; }
die() { echo "deploy/container/build.sh: $*" >&2; exit 1; }

target=${1:-}
case "$target" in
    amd64 | arm64 | all) ;;
    *) echo "usage: $0 amd64|arm64|all" >&2; exit 2 ;;
esac
command -v podman >/dev/null || die "podman not found: run scripts/ci/setup-podman.sh first"
version=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$repo/pyproject.toml")
name=localhost/ddc

build_one() { # ARCH: build (or find current) $name:$version-ARCH
    arch=$1
    local image="$name:$version-$arch" base="localhost/ddc-trixie-$arch:latest"
    local ctx="$repo/build/container/$arch" start
    start=$(date +%s)
    "$repo/scripts/ci/build-base-image.sh" "$arch" >&2
    rm -rf "$ctx"
    mkdir -p "$ctx/pip"
    "$repo/scripts/build-wheelhouse.sh" "$arch" "$pyver" "$ctx/wheelhouse" >&2
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
        -d "$ctx/pip" "pip==$pip_version"
    mv "$ctx/pip/pip-$pip_version-"*.whl "$ctx/pip/pip.whl" # a fixed name for the RUN step
    local hash
    hash=$( {
        podman image inspect --format '{{.Id}}' "$base"
        (cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        sha256sum <"$here/Containerfile"
        sha256sum <"$here/build.sh"
    } | sha256sum | cut -c1-16)
    local have
    have=$(podman image inspect --format '{{ index .Labels "ddc.input-hash" }}' "$image" 2>/dev/null || true)
    if [[ -z ${DDC_CONTAINER_REBUILD:-} && $have == "$hash" ]]; then
        log "$image up to date (input hash $hash)"
        echo "$image"
        return
    fi
    log "podman build $image from $base (input hash $hash)"
    local old_id
    old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    # --format docker: the OCI image format has no HEALTHCHECK. --layers=false: nothing of
    # the install stage is kept; the input hash is the cache.
    podman build --pull=never --network=none --runtime runc --layers=false \
        --platform "linux/$arch" --format docker \
        --build-arg "BASE=$base" --build-arg "DDC_VERSION=$version" \
        --label "ddc.input-hash=$hash" \
        -f "$here/Containerfile" -t "$image" "$ctx" >&2 ||
        die "podman build of $image failed (see above)"
    if [[ -n $old_id && $old_id != "$(podman image inspect --format '{{.Id}}' "$image")" ]]; then
        podman rmi "$old_id" >/dev/null 2>&1 || true
    fi
    podman image prune -f >/dev/null 2>&1 || true
    log "built $image in $(($(date +%s) - start)) s ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec) )"
    echo "$image"
}

if [[ $target != all ]]; then
    build_one "$target"
    exit 0
fi
build_one amd64
build_one arm64
arch=
list="$name:$version"
podman manifest rm "$list" >/dev/null 2>&1 || podman rmi "$list" >/dev/null 2>&1 || true
podman manifest create "$list" >/dev/null
for a in amd64 arm64; do
    podman manifest add "$list" "containers-storage:$name:$version-$a" >/dev/null
done
log "manifest list $list: amd64, arm64 (push both with: podman manifest push --all $list docker://REGISTRY/ddc:$version)"
echo "$list"

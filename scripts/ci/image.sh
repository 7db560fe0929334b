#!/usr/bin/env bash
# CI for the appliance images (docs/image.md), as root on a Debian 12/13 host:
# installs what the build and the tests need, builds the images once each, then
# runs tests/image: the file-level inspection of both images and two emulated
# UEFI boots of the generic one (good egress config, bad config).
#
#   scripts/ci/image.sh                # everything
#   scripts/ci/image.sh --deps-only    # host packages, binfmt_misc, podman only
#   scripts/ci/image.sh --no-build     # tests against the images in image/out
#
# Environment:
#   DDC_IMAGE_VARIANTS   variants to build (default "generic rpi")
#   DDC_IMAGE_TEST_VENV  venv for pytest (default /opt/ddc-image-test-venv)
#   everything image/build.sh reads (DDC_DEBIAN_SNAPSHOT, DDC_IMAGE_CACHE, ...)
#
# Time on a 2-core machine: see docs/image.md (the cached mmdebstrap tarball
# under /var/cache/ddc/image makes a rebuild much shorter than the first one).
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n==== image: %s (%s)\n' "$1" "$(date +%T)"; }

deps_only=false
build=true
for arg in "$@"; do
    case "$arg" in
        --deps-only) deps_only=true ;;
        --no-build) build=false ;;
        *)
            echo "usage: $0 [--deps-only|--no-build]" >&2
            exit 2
            ;;
    esac
done

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/ci/image.sh: run as root (mmdebstrap, chroot, binfmt_misc)" >&2
    exit 2
fi

step "host packages"
pkgs=(
    mmdebstrap debian-archive-keyring qemu-user-static binfmt-support
    qemu-system-arm qemu-efi-aarch64 ipxe-qemu
    mtools dosfstools fdisk e2fsprogs xz-utils bc
    python3-venv
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "binfmt_misc (arm64 userland through qemu-user)"
[[ -e /proc/sys/fs/binfmt_misc/status ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || update-binfmts --enable qemu-aarch64
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64

step "podman (the ddc wheel is built in an arm64 container: scripts/build-wheelhouse.sh)"
scripts/ci/setup-podman.sh
$deps_only && exit 0

if $build; then
    for variant in ${DDC_IMAGE_VARIANTS:-generic rpi}; do
        step "build $variant"
        nice -n 10 image/build.sh "$variant"
    done
fi

step "test venv"
venv=${DDC_IMAGE_TEST_VENV:-/opt/ddc-image-test-venv}
if [[ ! -x $venv/bin/pytest ]]; then
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pytest pytest-timeout
fi

step "tests/image"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider -o timeout=3600 -rs tests/image
rc=$?
set -e
if [[ -f image/out/boot-timings.json ]]; then
    echo "boot timings: $(tr -d '\n ' <image/out/boot-timings.json)"
fi
exit "$rc"

#!/usr/bin/env bash
# CI for the appliance images (docs/image.md), as root on a Debian 12/13 host:
# installs what the build and the tests need, builds the images once each, then
# runs tests/image: the file-level inspection of both images and two emulated
# boots of each (good egress config, bad config): the generic one under
# qemu-system-aarch64 -M virt with UEFI, the Raspberry Pi one under -M raspi4b
# (QEMU >= 9: from bookworm-backports on Debian 12).
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
    mmdebstrap debian-archive-keyring
    qemu-efi-aarch64 ipxe-qemu device-tree-compiler
    mtools dosfstools fdisk e2fsprogs xz-utils bc
    python3-venv
)
# shellcheck source=scripts/ci/lib/apt.sh
. scripts/ci/lib/apt.sh
ddc_apt_install "${pkgs[@]}"

step "podman, qemu-user and its arm64 binfmt_misc handler (scripts/ci/setup-podman.sh)"
scripts/ci/setup-podman.sh

step "qemu-system-aarch64 >= 9 (its raspi4b machine boots the Pi image)"
ddc_apt_install_newest_qemu qemu-system-arm
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

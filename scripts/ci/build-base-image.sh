#!/usr/bin/env bash
# Build the Debian 13 (trixie) container image the molecule scenarios of
# ansible/ run on: systemd as PID 1, python3 for Ansible, nothing else.
# scripts/build-wheelhouse.sh builds the wheels in it and deploy/container/build.sh
# starts from it, so it lives with the CI scripts, not under image/ (the
# appliance image does not use it).
#
#   scripts/ci/build-base-image.sh arm64   # -> localhost/ddc-trixie-arm64:latest
#   scripts/ci/build-base-image.sh amd64   # -> localhost/ddc-trixie-amd64:latest
#
# No registry is needed: the root fs comes from mmdebstrap (arm64 through
# qemu-user-static + binfmt_misc, see scripts/ci/setup-podman.sh) and is
# `podman import`ed.
#
# Cache: the image carries the label ddc.input-hash, a hash of every input
# below (suite, mirror, variant, package list, hooks). If the image exists
# with the same hash nothing is done; if only the tarball
# /var/cache/ddc/images/ddc-trixie-ARCH-HASH.tar exists it is imported.
# DDC_IMAGE_REBUILD=1 forces a new build. Concurrent runs for one arch are
# serialised (flock on DDC_IMAGE_CACHE/ddc-trixie-ARCH.lock).
#
# Environment:
#   DDC_DEBIAN_MIRROR  (default http://deb.debian.org/debian)
#   DDC_IMAGE_CACHE    (default /var/cache/ddc/images)
set -euo pipefail

arch="${1:-}"
case "$arch" in
    arm64 | amd64) ;;
    *)
        echo "usage: $0 arm64|amd64" >&2
        exit 2
        ;;
esac

suite=trixie
mirror="${DDC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DDC_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
variant=apt
cache="${DDC_IMAGE_CACHE:-/var/cache/ddc/images}"
image="localhost/ddc-${suite}-${arch}:latest"

# What the roles expect on a bare Debian host, plus what Ansible needs.
packages=(
    systemd systemd-sysv dbus
    python3 python3-apt
    sudo iproute2 procps kmod ca-certificates
    gnupg
)

# Hooks run on the host with the root fs as "$1". Keep them in the hash input.
# shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap, not here
customize_hooks=(
    # apt in the image behaves like on a real host (mmdebstrap's own apt
    # options must not leak into the image).
    'rm -f "$1"/etc/apt/apt.conf.d/99mmdebstrap "$1"/etc/dpkg/dpkg.cfg.d/99mmdebstrap'
    # Generated on first boot; an empty file tells systemd it is a container image.
    ': > "$1"/etc/machine-id'
    'rm -f "$1"/var/lib/dbus/machine-id'
    'echo ddc-test > "$1"/etc/hostname'
    # Units that make no sense in a container and only slow boot down.
    'for u in getty@tty1.service serial-getty@.service systemd-firstboot.service \
        systemd-remount-fs.service sys-kernel-config.mount sys-kernel-debug.mount \
        sys-kernel-tracing.mount systemd-journald-audit.socket \
        apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
        ln -sf /dev/null "$1/etc/systemd/system/$u"; done'
    # Fewer bytes: docs, man pages, locales (the image only runs tests).
    'rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/* "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*'
)

input="suite=$suite
mirror=$mirror
security=$security_mirror
variant=$variant
arch=$arch
packages=${packages[*]}
$(printf 'hook=%s\n' "${customize_hooks[@]}")"
rootfs_hash=$(printf '%s' "$input" | sha256sum | cut -c1-16)
tarball="$cache/ddc-${suite}-${arch}-${rootfs_hash}.tar"

# Emulated architectures (arm64 on an x86-64 host) get an overlay at import
# time (appended to a copy of the tarball, no qemu needed): systemd 257
# cannot set up service credentials under qemu-user (units with
# ImportCredential=/LoadCredential= fail with 243/CREDENTIALS: journald,
# networkd, tmpfiles, sysusers, sysctl...), so drop-ins clear them. Bump
# overlay_version when the overlay changes.
emulated=false
[[ "$arch" != "$(dpkg --print-architecture)" ]] && emulated=true
overlay_version="qemu-no-credentials-v1"
if $emulated; then
    hash=$(printf '%s+%s' "$rootfs_hash" "$overlay_version" | sha256sum | cut -c1-16)
else
    hash=$rootfs_hash
fi

log() { printf '[build-base-image %s] %s\n' "$arch" "$*" >&2; }

# One run per arch at a time: in CI, scripts/ci/molecule.sh and image/build.sh (through
# scripts/build-wheelhouse.sh) ask for the same image at once; the second waits and
# then finds it up to date.
mkdir -p "$cache"
exec 9>"$cache/ddc-${suite}-${arch}.lock"
flock 9

have=$(podman image inspect --format '{{ index .Labels "ddc.input-hash" }}' "$image" 2>/dev/null || true)
if [[ -z "${DDC_IMAGE_REBUILD:-}" && "$have" == "$hash" ]]; then
    log "$image up to date (input hash $hash)"
    exit 0
fi

start=$(date +%s)
if [[ -n "${DDC_IMAGE_REBUILD:-}" || ! -s "$tarball" ]]; then
    if [[ "$arch" != "$(dpkg --print-architecture)" ]] &&
        ! grep -q '^enabled' "/proc/sys/fs/binfmt_misc/qemu-${arch/arm64/aarch64}" 2>/dev/null; then
        log "no binfmt_misc handler for $arch: run scripts/ci/register-binfmt.sh (setup-podman.sh does) first"
        exit 1
    fi
    mkdir -p "$cache"
    hooks=()
    for h in "${customize_hooks[@]}"; do hooks+=(--customize-hook="$h"); done
    log "mmdebstrap $suite/$arch -> $tarball"
    tmp="$tarball.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    mmdebstrap \
        --quiet \
        --variant="$variant" \
        --architectures="$arch" \
        --include="$(
            IFS=,
            echo "${packages[*]}"
        )" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "${hooks[@]}" \
        --format=tar \
        "$suite" "$tmp" \
        "deb $mirror $suite main" \
        "deb $mirror $suite-updates main" \
        "deb $security_mirror $suite-security main"
    mv "$tmp" "$tarball"
    trap - EXIT
    # Keep only the newest tarball per arch.
    find "$cache" -maxdepth 1 -name "ddc-${suite}-${arch}-*.tar" ! -name "$(basename "$tarball")" -delete
else
    log "reusing $tarball"
fi

old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
import_src="$tarball"
if $emulated; then
    ov=$(mktemp -d)
    import_src="$cache/ddc-${suite}-${arch}-${hash}.overlay.tar"
    trap 'rm -rf "$ov" "$import_src"' EXIT
    tar -xf "$tarball" -C "$ov" --wildcards './usr/lib/systemd/system/*.service'
    mapfile -t cred_units < <(grep -l -E '^(ImportCredential|LoadCredential|LoadCredentialEncrypted|SetCredential|SetCredentialEncrypted)=' \
        "$ov"/usr/lib/systemd/system/*.service | xargs -n1 basename)
    rm -rf "${ov:?}/usr"
    for u in "${cred_units[@]}"; do
        mkdir -p "$ov/etc/systemd/system/$u.d"
        printf '%s\n' "# ddc test image ($overlay_version): no service credentials under qemu-user" \
            "[Service]" "ImportCredential=" "LoadCredential=" "LoadCredentialEncrypted=" \
            "SetCredential=" "SetCredentialEncrypted=" \
            >"$ov/etc/systemd/system/$u.d/ddc-qemu-no-credentials.conf"
    done
    cp "$tarball" "$import_src"
    # Only the new entries (podman refuses duplicate paths in a layer).
    members=()
    for u in "${cred_units[@]}"; do
        members+=("./etc/systemd/system/$u.d" "./etc/systemd/system/$u.d/ddc-qemu-no-credentials.conf")
    done
    tar -rf "$import_src" -C "$ov" --owner=0 --group=0 --numeric-owner --no-recursion "${members[@]}"
    log "overlay: credentials cleared for ${#cred_units[@]} units (${cred_units[*]})"
fi

log "podman import -> $image"
podman import --quiet \
    --arch "$arch" --os linux \
    --change 'CMD ["/sbin/init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL ddc.input-hash=$hash" \
    --change "LABEL ddc.suite=$suite" \
    --message "ddc $suite $arch base image ($hash)" \
    "$import_src" "$image" >/dev/null
if $emulated; then
    rm -rf "$ov" "$import_src"
    trap - EXIT
fi
# Drop the image the tag pointed to before (if any); ignore if still in use.
if [[ -n "$old_id" && "$old_id" != "$(podman image inspect --format '{{.Id}}' "$image")" ]]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi

log "built $image (input hash $hash, root fs $rootfs_hash) in $(($(date +%s) - start)) s"

#!/usr/bin/env bash
# Build a flashable Data Diode Connector appliance image: Debian 13 (trixie)
# arm64, provisioned with the project's Ansible roles, laid out into a
# partitioned disk image without loop devices, Docker or root-only mounts of
# the image itself. See docs/image.md.
#
#   image/build.sh generic   # GPT + EFI system partition (GRUB): Graviton, arm64 UEFI VMs
#   image/build.sh rpi       # MBR + VideoCore firmware partition: Raspberry Pi 4/5
#
# Outputs in image/out/ (DDC_IMAGE_OUT):
#   ddc-VARIANT-arm64.img.xz          the image to flash / import
#   ddc-VARIANT-arm64.img             the same, uncompressed (the boot tests use it;
#                                     DDC_IMAGE_KEEP_RAW=0 drops it)
#   ddc-VARIANT-arm64.manifest.json   packages + versions, appliance version, build
#                                     inputs, SOURCE_DATE_EPOCH, sizes, timings
#   SHA256SUMS                        of every .img.xz and manifest in the directory
#
# Steps (each timed, the times go into the manifest):
#   1. base       mmdebstrap tarball of packages/common.list, shared by both variants,
#                 cached in /var/cache/ddc/image keyed by a hash of its inputs
#                 (suite, mirrors, package list, options)
#   2. rootfs     the tarball unpacked into a work directory
#   3. wheelhouse the appliance's wheel (built with its native module and self-checked in
#                 an arm64 podman container: scripts/build-wheelhouse.sh) + arm64 wheels
#                 of its dependencies (PyPI)
#   4. provision  in a chroot (qemu-user): packages/VARIANT.list, image settings, the Ansible roles
#                 (kernel_tuning, librdkafka, vector) via community.general.chroot,
#                 the daemon (venv, user, unit), first-boot unit, boot loader
#   5. assemble   ext4 (mkfs.ext4 -d) + vfat (mkfs.vfat, mcopy) + sfdisk + dd
#   6. compress   xz
#
# Environment:
#   DDC_DEBIAN_MIRROR           default http://deb.debian.org/debian
#   DDC_DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security
#   DDC_DEBIAN_SNAPSHOT         e.g. 20250901T000000Z: use snapshot.debian.org at that
#                               time instead of the mirrors (reproducible package set)
#   SOURCE_DATE_EPOCH           default: commit time of the repository's HEAD
#   DDC_IMAGE_CACHE             default /var/cache/ddc/image
#   DDC_IMAGE_WORK              default /var/tmp/ddc-image (several GB of scratch)
#   DDC_IMAGE_OUT               default image/out
#   DDC_IMAGE_REBUILD=1         bootstrap anew even if a cached tarball exists
#   DDC_IMAGE_KEEP_RAW=0        do not keep the uncompressed .img
#   DDC_IMAGE_XZ_LEVEL          default 1 (6: ~8% smaller, ~2.3x slower; see docs/image.md)
#   DDC_ANSIBLE_VENV            a venv with ansible (default /opt/ddc-ansible-venv if it
#                               has ansible-playbook, else /opt/ddc-image-venv is made)
#   DDC_ANSIBLE_EXTRA_VARS      extra -e for the provisioning playbook, e.g.
#                               'kernel_tuning_thp_mode=never' or '@site-vars.yml'
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
prog="image/build.sh"

log() { printf '[%s %s %s] %s\n' "$prog" "${variant:-}" "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ----------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------
suite=trixie
arch=arm64
mirror="${DDC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DDC_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
snapshot="${DDC_DEBIAN_SNAPSHOT:-}"
if [[ -n "$snapshot" ]]; then
    [[ "$snapshot" =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "DDC_DEBIAN_SNAPSHOT must look like 20250901T000000Z"
    mirror="http://snapshot.debian.org/archive/debian/$snapshot"
    security_mirror="http://snapshot.debian.org/archive/debian-security/$snapshot"
fi
cache="${DDC_IMAGE_CACHE:-/var/cache/ddc/image}"
work_root="${DDC_IMAGE_WORK:-/var/tmp/ddc-image}"
out="${DDC_IMAGE_OUT:-$here/out}"
xz_level="${DDC_IMAGE_XZ_LEVEL:-1}"
keep_raw="${DDC_IMAGE_KEEP_RAW:-1}"

if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# Partition sizes (MiB). The root file system is sized to its content plus
# headroom here and grown to the whole disk on first boot.
esp_mib=128          # generic: only GRUB's EFI binary and the first-boot files
rpi_boot_mib=512     # rpi: firmware + kernel + initrd (room for an upgrade)
root_headroom_mib=384

# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
declare -A timings=()
timed() { # NAME COMMAND...: run, log and remember the wall time
    local name=$1 t0 t1
    shift
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    timings[$name]=$(printf '%.1f' "$(echo "$t1 - $t0" | bc)")
    log "step $name: ${timings[$name]} s"
}

substep() { # NAME COMMAND...: as timed, for the provision namespace (another process)
    local name=$1 t0 t1
    shift
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    printf '%s %.1f\n' "$name" "$(echo "$t1 - $t0" | bc)" >>"$work/timings"
}

read_list() { # FILE...: package names, comments and blank lines dropped
    sed -e 's/#.*//' -e 's/[[:space:]]\+//g' "$@" | grep -v '^$'
}

# Deterministic identifiers (file system UUIDs, FAT volume id, disk ids):
# derived from the variant and SOURCE_DATE_EPOCH so a rebuild of the same
# inputs gives the same image.
det_hex() { printf '%s' "ddc-$variant-$1-$SOURCE_DATE_EPOCH" | sha256sum | cut -c1-"$2"; }
det_uuid() {
    local h
    h=$(det_hex "$1" 32)
    # RFC 4122 version 4 / variant 1 bits, so tools accept it as a random UUID.
    printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" \
        $(((0x${h:16:1} & 0x3) | 0x8)) "${h:17:3}" "${h:20:12}"
}

in_root() { # COMMAND...: run inside the root fs (qemu-user through binfmt_misc)
    chroot "$rootfs" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"
}

# ----------------------------------------------------------------------------
# 0. host checks
# ----------------------------------------------------------------------------
check_host() {
    [[ $(id -u) -eq 0 ]] || die "run as root (mmdebstrap, chroot)"
    local tool missing=()
    for tool in mmdebstrap sfdisk mkfs.ext4 mkfs.vfat mcopy mmd xz bc unshare chroot; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "missing host tools: ${missing[*]} (run scripts/ci/image.sh --deps-only)"
    # The ddc wheel (C extension) is built in an arm64 container (build-wheelhouse.sh).
    command -v podman >/dev/null || die "podman missing: run scripts/ci/setup-podman.sh"
    if [[ $(dpkg --print-architecture) != "$arch" ]]; then
        # Registers the aarch64 handler (qemu's binfmt.d file) and proves it runs.
        "$repo/scripts/ci/register-binfmt.sh" || die "no working binfmt_misc handler for aarch64"
    fi
}

# ----------------------------------------------------------------------------
# 1. base: mmdebstrap tarball (cached)
# ----------------------------------------------------------------------------
base_packages=()
variant_packages=()
base_components=()
mmdebstrap_opts=()
compute_base_inputs() {
    # One base tarball for both variants (the slow part: kernel + initramfs
    # under qemu-user); the few variant packages are installed on top of it
    # during provisioning.
    mapfile -t base_packages < <(read_list "$here/packages/common.list")
    mapfile -t variant_packages < <(read_list "$here/packages/$variant.list")
    # non-free-firmware: raspi-firmware (rpi) lives there.
    base_components=(main non-free-firmware)
    mmdebstrap_opts=(
        --variant=apt
        --architectures="$arch"
        --aptopt='APT::Install-Recommends "false"'
        # Slim: no docs (copyrights stay), man pages or translations. These
        # dpkg options stay in the image, so later upgrades stay slim too.
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-include=/usr/share/locale/locale.alias'
    )
    if [[ -n "$snapshot" ]]; then
        # snapshot.debian.org serves expired Release files by design.
        mmdebstrap_opts+=(--aptopt='Acquire::Check-Valid-Until "false"')
    fi
    local comps="${base_components[*]}"
    sources=(
        "deb $mirror $suite $comps"
        "deb $mirror $suite-updates $comps"
        "deb $security_mirror $suite-security $comps"
    )
    base_input="suite=$suite
arch=$arch
sources=$(printf '%s|' "${sources[@]}")
options=${mmdebstrap_opts[*]}
packages=${base_packages[*]}"
    base_hash=$(printf '%s' "$base_input" | sha256sum | cut -c1-16)
    base_tar="$cache/ddc-$suite-$arch-base-$base_hash.tar"
}

build_base() {
    if [[ -z "${DDC_IMAGE_REBUILD:-}" && -s "$base_tar" ]]; then
        log "reusing $base_tar"
        base_cached=true
        return
    fi
    base_cached=false
    mkdir -p "$cache"
    local tmp="$base_tar.tmp.$$"
    log "mmdebstrap $suite/$arch (${#base_packages[@]} packages) -> $base_tar"
    # The tarball's own SOURCE_DATE_EPOCH: the snapshot time or now. It is not
    # part of the cache key (a new commit must not force a new bootstrap).
    local base_epoch
    if [[ -n "$snapshot" ]]; then
        base_epoch=$(date -u -d "${snapshot:0:8} ${snapshot:9:2}:${snapshot:11:2}:${snapshot:13:2}" +%s)
    else
        base_epoch=$(date +%s)
    fi
    if ! SOURCE_DATE_EPOCH=$base_epoch nice -n 10 mmdebstrap --quiet \
        "${mmdebstrap_opts[@]}" \
        --include="$(IFS=,; echo "${base_packages[*]}")" \
        --format=tar "$suite" "$tmp" "${sources[@]}"; then
        rm -f "$tmp"
        die "mmdebstrap failed"
    fi
    mv "$tmp" "$base_tar"
    printf '%s\n' "$base_input" >"$base_tar.inputs"
    echo "$base_epoch" >"$base_tar.epoch"
    # Keep only the newest base tarball.
    find "$cache" -maxdepth 1 -name "ddc-$suite-$arch-base-*.tar*" \
        ! -name "$(basename "$base_tar")*" -delete
}

# ----------------------------------------------------------------------------
# 2. rootfs: unpack the tarball
# ----------------------------------------------------------------------------
unpack_rootfs() {
    rm -rf "$work"
    mkdir -p "$rootfs"
    tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$base_tar" -C "$rootfs"
    py_version=$(basename "$(ls -d "$rootfs"/usr/lib/python3.[0-9]* | sort -V | tail -1)")
    py_version=${py_version#python}
    log "root fs unpacked ($(du -sh "$rootfs" | cut -f1)), Python $py_version"
}

# ----------------------------------------------------------------------------
# 3. wheelhouse: the appliance (its wheel built and self-checked in an arm64 container,
#    cached in build/native-wheels/) + arm64 wheels of its dependencies
# ----------------------------------------------------------------------------
ensure_ansible_venv() {
    local default=/opt/ddc-ansible-venv
    if [[ -n "${DDC_ANSIBLE_VENV:-}" ]]; then
        ansible_venv=$DDC_ANSIBLE_VENV
    elif [[ -x $default/bin/ansible-playbook ]]; then
        ansible_venv=$default
    else
        ansible_venv=/opt/ddc-image-venv
    fi
    if [[ ! -x $ansible_venv/bin/ansible-playbook ]]; then
        local pin
        pin=$(grep -E '^ansible==' "$repo/requirements/ansible.txt" || echo ansible)
        log "creating $ansible_venv ($pin)"
        /usr/bin/python3 -m venv "$ansible_venv"
        "$ansible_venv/bin/pip" install --quiet --upgrade pip
        "$ansible_venv/bin/pip" install --quiet "$pin"
    fi
}

build_wheelhouse() {
    PYTHON="$ansible_venv/bin/python" "$repo/scripts/build-wheelhouse.sh" arm64 "$py_version" \
        "$wheelhouse" >"$work/wheelhouse.log" 2>&1 ||
        die "building the wheelhouse failed: see $work/wheelhouse.log"
    log "wheelhouse: $(cd "$wheelhouse" && echo *)"
}

# ----------------------------------------------------------------------------
# 4. provision (inside a private mount namespace: see provision_ns)
# ----------------------------------------------------------------------------
provision() {
    # Re-run this script in a private mount namespace: /proc and /dev mounted
    # into the root fs vanish with it, whatever happens.
    unshare --mount --propagation private -- "$here/build.sh" --provision-ns "$variant"
}

# Runs in the private mount namespace, with the variables exported by main.
provision_ns() {
    mount -t proc proc "$rootfs/proc"
    mount --bind /dev "$rootfs/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$rootfs/dev/pts" 2>/dev/null || true
    mount -t tmpfs -o mode=0755 tmpfs "$rootfs/run"
    # Nothing may start services in the chroot; apt needs name resolution.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    rm -f "$rootfs/etc/resolv.conf"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"

    substep variant-packages install_variant_packages
    substep image-settings settings_before_roles
    substep ansible-roles run_roles
    substep ddc-daemon finish_ddc_install
    substep boot-loader-and-cleanup finish_rootfs
}

settings_before_roles() {
    image_settings
    boot_settings_pre_roles
}

finish_rootfs() {
    install_firstboot
    boot_loader
    collect_manifest_data
    cleanup_rootfs
}

# --- 4a. the variant's packages (boot loader / firmware) on the shared base
install_variant_packages() {
    local pkgs
    mapfile -t pkgs < <(read_list "$here/packages/$variant.list")
    log "variant packages: ${pkgs[*]}"
    in_root apt-get update -qq
    # These packages activate the initramfs trigger, but nothing of them belongs
    # in the initramfs: skip the rebuild (minutes under qemu-user).
    local conf="$rootfs/etc/initramfs-tools/update-initramfs.conf"
    cp -a "$conf" "$conf.ddc-build"
    sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$conf"
    in_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$work/apt-variant.log" 2>&1 ||
        die "apt-get install ${pkgs[*]} failed: see $work/apt-variant.log"
    mv "$conf.ddc-build" "$conf"
}

# --- 4b. image settings (not a role's business: what makes a root fs an image)
image_settings() {
    log "image settings (hostname, fstab, users, network, ssh off)"
    echo ddc >"$rootfs/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tddc\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$rootfs/etc/hosts"
    # systemd generates the machine id on first boot (and commits it).
    printf 'uninitialized\n' >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"

    local bootmnt
    if [[ $variant == generic ]]; then bootmnt=/boot/efi; else bootmnt=/boot/firmware; fi
    mkdir -p "$rootfs$bootmnt"
    cat >"$rootfs/etc/fstab" <<EOF
# <file system>   <mount point>   <type>  <options>   <dump>  <pass>
# Written by image/build.sh ($variant). The root file system is grown to the
# whole disk on first boot.
UUID=$root_uuid  /  ext4  errors=remount-ro$([[ $variant == generic ]] && echo ,x-systemd.growfs)  0  1
# Boot partition: operator's first-boot files (ddc/, ssh/) are read from here.
UUID=$boot_volid_fstab  $bootmnt  vfat  umask=0077,nofail  0  2
EOF

    # No default passwords: root is locked (no password login on any console).
    in_root usermod --lock root
    in_root usermod --password '!*' root

    # First-boot presets (enable-only) must not switch on what the image keeps
    # off (Debian's presets would enable ssh.service).
    install -D -m 0644 "$here/rootfs/etc/systemd/system-preset/00-ddc.preset" \
        "$rootfs/etc/systemd/system-preset/00-ddc.preset"

    # The appliance is headless: systemd-firstboot would prompt on the console
    # for locale / time zone / root password and hold up the boot.
    in_root systemctl --quiet mask systemd-firstboot.service

    # Management network: DHCP on Ethernet interfaces (systemd-networkd). A
    # diode NIC configured by the diode_network role (10-ddc-diode.network)
    # sorts first and wins. The operator can replace this file through the
    # boot partition (network/*.network, see docs/image.md).
    mkdir -p "$rootfs/etc/systemd/network"
    install -m 0644 "$here/rootfs/etc/systemd/network/90-ddc-management.network" \
        "$rootfs/etc/systemd/network/"
    in_root systemctl --quiet enable systemd-networkd.service systemd-timesyncd.service
    # A diode link is never "online" in networkd's sense; nothing here may wait
    # two minutes for it (same choice as the diode_network role).
    in_root systemctl --quiet disable systemd-networkd-wait-online.service 2>/dev/null || true
    in_root systemctl --quiet mask systemd-networkd-wait-online.service

    # SSH: installed, off. ddc-firstboot enables it only when the operator
    # supplies ssh/authorized_keys. Host keys are made on the device, never
    # shipped in the image.
    install -m 0644 "$here/rootfs/etc/ssh/sshd_config.d/ddc.conf" "$rootfs/etc/ssh/sshd_config.d/"
    in_root systemctl --quiet disable ssh.service ssh.socket 2>/dev/null || true
    rm -f "$rootfs"/etc/ssh/ssh_host_*

    # Nothing periodic that pulls from the internet behind a diode.
    in_root systemctl --quiet disable apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
}

# --- 4c. boot settings the roles then edit (kernel command line) -------------
boot_settings_pre_roles() {
    if [[ $variant == generic ]]; then
        # /etc/default/grub: read by ddc-update-grub (no grub-mkconfig: it needs
        # the real block devices). kernel_tuning edits GRUB_CMDLINE_LINUX_DEFAULT.
        cat >"$rootfs/etc/default/grub" <<'EOF'
# Kernel command line of the DDC appliance. After editing, run
# /usr/local/sbin/ddc-update-grub (the kernel_tuning role does).
# Only plain VAR="value" lines: this file is read by a POSIX shell.
GRUB_TIMEOUT=1
# Serial consoles: ttyS0 (AWS Graviton), ttyAMA0 (PL011: arm64 VMs, QEMU virt);
# the last one that exists is /dev/console.
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 console=ttyAMA0,115200"
GRUB_CMDLINE_LINUX_DEFAULT=""
EOF
        install -m 0755 "$here/rootfs/usr/local/sbin/ddc-update-grub" "$rootfs/usr/local/sbin/"
        install -D -m 0755 "$here/rootfs/etc/kernel/postinst.d/zz-ddc-update-grub" \
            "$rootfs/etc/kernel/postinst.d/zz-ddc-update-grub"
        install -D -m 0755 "$here/rootfs/etc/kernel/postinst.d/zz-ddc-update-grub" \
            "$rootfs/etc/kernel/postrm.d/zz-ddc-update-grub"
        in_root /usr/local/sbin/ddc-update-grub
        # systemd-repart grows the root partition (GPT) to the disk on first
        # boot; x-systemd.growfs in fstab grows the file system.
        install -D -m 0644 "$here/rootfs/etc/repart.d/50-root.conf" "$rootfs/etc/repart.d/50-root.conf"
    else
        # raspi-firmware writes cmdline.txt / config.txt from these settings on
        # every kernel or firmware upgrade.
        cat >"$rootfs/etc/default/raspi-firmware" <<EOF
# Written by image/build.sh (rpi); see /usr/share/doc/raspi-firmware.
ROOTPART="UUID=$root_uuid"
# HDMI, then the serial consoles: ttyAMA10 (Pi 5 debug UART), ttyS1 (Pi 4 mini UART).
CONSOLES="tty0 ttyAMA10,115200 ttyS1,115200"
# No cma= on the command line (CMA=0): the kernel default serves a headless
# node, and an explicit cma= can make a Pi 4 unbootable (raspi-firmware cannot
# detect the board inside the build chroot).
CMA=0
EOF
        : >"$rootfs/etc/default/raspi-extra-cmdline"
        raspi_regenerate
        install -m 0755 "$here/rootfs/usr/local/sbin/ddc-growroot" "$rootfs/usr/local/sbin/"
        install -m 0644 "$here/rootfs/etc/systemd/system/ddc-growroot.service" "$rootfs/etc/systemd/system/"
        in_root systemctl --quiet enable ddc-growroot.service
    fi
}

raspi_regenerate() { # re-run raspi-firmware's hook: boot files, config.txt, cmdline.txt
    in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware
}

# --- 4d. the project's Ansible roles ------------------------------------------
run_roles() {
    log "ansible roles (chroot connection): kernel_tuning, librdkafka, vector, ddc"
    local extra=()
    [[ -n "${DDC_ANSIBLE_EXTRA_VARS:-}" ]] && extra=(-e "$DDC_ANSIBLE_EXTRA_VARS")
    local rc=0
    (
        cd "$here/ansible"
        ANSIBLE_CONFIG="$here/ansible/ansible.cfg" \
            ANSIBLE_ROLES_PATH="$repo/ansible/roles" \
            nice -n 10 "$ansible_venv/bin/ansible-playbook" \
            -i "$rootfs," -c community.general.chroot \
            -e "@$here/ansible/vars/common.yml" -e "@$here/ansible/vars/$variant.yml" \
            -e "ddc_wheelhouse_dir=$wheelhouse" \
            "${extra[@]}" provision.yml
    ) >"$work/ansible.log" 2>&1 || rc=$?
    grep -E '^(fatal|failed:)|ok=' "$work/ansible.log" | sed 's/^/    /' >&2 || true
    ((rc == 0)) || die "ansible provisioning failed (exit $rc): see $work/ansible.log"
    if [[ $variant == rpi ]]; then
        # kernel_tuning put transparent_hugepage= into cmdline.txt; raspi-firmware
        # rewrites that file on every kernel upgrade, so carry the setting in
        # /etc/default/raspi-extra-cmdline too and regenerate (same result).
        local thp
        thp=$(grep -o 'transparent_hugepage=[a-z]*' "$rootfs/boot/firmware/cmdline.txt" || true)
        [[ -n "$thp" ]] || die "kernel_tuning left no transparent_hugepage= in cmdline.txt"
        echo "$thp" >"$rootfs/etc/default/raspi-extra-cmdline"
        raspi_regenerate
        rm -f "$rootfs"/boot/firmware/cmdline.txt.*~ "$rootfs"/boot/firmware/cmdline.txt.[0-9]*
    fi
}

# --- 4e. the daemon --------------------------------------------------------------
# The ddc role installed it (user, /opt/ddc/venv from the wheelhouse, ddc@.service)
# with ddc_configure_node=false: ddc-firstboot writes the node's key and config and
# enables ddc@<role> once they are valid.
finish_ddc_install() {
    # Byte-compile again, deterministically (SOURCE_DATE_EPOCH: checked hashes, not
    # the build's timestamps that pip's compile wrote).
    in_root /opt/ddc/venv/bin/python -m compileall -q -f --invalidation-mode checked-hash \
        /opt/ddc/venv/lib >/dev/null
    in_root /opt/ddc/venv/bin/ddc --version >/dev/null
    # The native module loads in the image itself (libcrypto.so.3 from libssl3t64), and
    # zstandard (link compression) is in its venv.
    in_root /opt/ddc/venv/bin/python -m appliance.protocol.selfcheck --require-zstd >&2 ||
        die "appliance.protocol.selfcheck failed in the image's venv"
    install -d -m 0755 "$rootfs/var/lib/ddc"
}

# --- 4f. first boot ----------------------------------------------------------------
install_firstboot() {
    log "first-boot unit"
    install -D -m 0755 "$here/rootfs/usr/local/libexec/ddc/firstboot" \
        "$rootfs/usr/local/libexec/ddc/firstboot"
    install -m 0644 "$here/rootfs/etc/systemd/system/ddc-firstboot.service" \
        "$rootfs/etc/systemd/system/"
    in_root systemctl --quiet enable ddc-firstboot.service
    # Tell the first-boot script where the boot partition is mounted.
    printf 'DDC_BOOT_PARTITION=%s\n' "$([[ $variant == generic ]] && echo /boot/efi || echo /boot/firmware)" \
        >"$rootfs/etc/default/ddc-firstboot"
}

# --- 4g. boot loader ------------------------------------------------------------------
boot_loader() {
    rm -rf "$bootdir"
    mkdir -p "$bootdir"
    if [[ $variant == generic ]]; then
        log "GRUB: standalone EFI binary, grub.cfg on the root fs"
        in_root /usr/local/sbin/ddc-update-grub
        # The embedded config finds the root fs by UUID and hands over to the
        # grub.cfg there (regenerated on the device by ddc-update-grub).
        cat >"$rootfs/tmp/grub-embedded.cfg" <<EOF
search --no-floppy --fs-uuid --set=ddcroot $root_uuid
if [ -n "\$ddcroot" ]; then
    set root=\$ddcroot
    set prefix=(\$root)/boot/grub
    configfile (\$root)/boot/grub/grub.cfg
else
    echo "DDC appliance: no file system with UUID $root_uuid (the root partition)"
fi
EOF
        in_root grub-mkstandalone --format=arm64-efi --output=/tmp/BOOTAA64.EFI \
            --locales= --fonts= --themes= \
            --modules="part_gpt part_msdos ext2 fat search search_fs_uuid configfile linux gzio normal echo test" \
            "boot/grub/grub.cfg=/tmp/grub-embedded.cfg"
        mkdir -p "$bootdir/EFI/BOOT"
        mv "$rootfs/tmp/BOOTAA64.EFI" "$bootdir/EFI/BOOT/BOOTAA64.EFI"
        rm -f "$rootfs/tmp/grub-embedded.cfg"
    else
        log "Raspberry Pi boot partition from /boot/firmware"
        [[ -s $rootfs/boot/firmware/config.txt && -s $rootfs/boot/firmware/cmdline.txt ]] ||
            die "raspi-firmware did not populate /boot/firmware"
        cp -a "$rootfs/boot/firmware/." "$bootdir/"
        # The root fs keeps an empty mount point; the partition holds the files.
        find "$rootfs/boot/firmware" -mindepth 1 -delete
    fi
    # Where the operator drops the first-boot files; a README says what goes there.
    mkdir -p "$bootdir/ddc" "$bootdir/ssh"
    install -m 0644 "$here/boot/README.txt" "$bootdir/README.txt"
}

# --- 4h. manifest data (read inside the chroot, while it is whole) ---------------------
collect_manifest_data() {
    in_root dpkg-query -W -f='${binary:Package}\t${Version}\n' | sort >"$work/dpkg.tsv"
    # Python distributions in the daemon's venv (read from the metadata, no pip run).
    local d
    for d in "$rootfs"/opt/ddc/venv/lib/python*/site-packages/*.dist-info; do
        awk -F': ' '/^Name: /{n=$2} /^Version: /{v=$2} END{print n "\t" v}' "$d/METADATA"
    done | sort >"$work/venv.tsv"
    in_root /opt/ddc/venv/bin/ddc --version | awk '{print $2}' >"$work/appliance-version"
    uname_kernel=$(basename "$(readlink -f "$rootfs/vmlinuz" 2>/dev/null || ls "$rootfs"/boot/vmlinuz-* | tail -1)")
    echo "${uname_kernel#vmlinuz-}" >"$work/kernel-version"
}

cleanup_rootfs() {
    log "cleanup"
    rm -f "$rootfs/usr/sbin/policy-rc.d"
    rm -f "$rootfs/etc/resolv.conf"
    # systemd-networkd (DHCP) has no resolver of its own here: an empty file
    # the operator (or a role) fills in.
    : >"$rootfs/etc/resolv.conf"
    in_root apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/ddc "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
        "$rootfs"/root/.ansible "$rootfs"/root/.cache "$rootfs"/tmp/* "$rootfs"/var/tmp/*
    find "$rootfs/var/log" -type f \( -name '*.log' -o -name 'lastlog' -o -name '*tmp' \) -exec truncate -s 0 {} +
    rm -f "$rootfs/etc/apt/apt.conf.d/99mmdebstrap"
    # Leave the mmdebstrap dpkg options (no docs/man/locales) in place.
}

# ----------------------------------------------------------------------------
# 5. assemble the disk image
# ----------------------------------------------------------------------------
assemble() {
    local raw="$work/disk.img"
    local root_img="$work/root.ext4" boot_img="$work/boot.vfat"
    local used_mib root_mib boot_mib
    # ext4 needs ~10% over the content (inodes, journal, reserved blocks).
    used_mib=$(du -s --block-size=1M --apparent-size "$rootfs" | cut -f1)
    root_mib=$(((used_mib * 115 / 100 + root_headroom_mib + 3) / 4 * 4))
    log "root ext4: ${used_mib} MiB of files in a ${root_mib} MiB file system"
    rm -f "$root_img"
    truncate -s "${root_mib}M" "$root_img"
    # E2FSPROGS_FAKE_TIME: the superblock times come from SOURCE_DATE_EPOCH.
    E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L ddc-root -U "$root_uuid" \
        -E "hash_seed=$(det_uuid hashseed),root_owner=0:0" -m 1 \
        -d "$rootfs" "$root_img"
    e2fsck -fn "$root_img" >/dev/null 2>&1 || die "e2fsck found problems in $root_img"

    if [[ $variant == generic ]]; then boot_mib=$esp_mib; else boot_mib=$rpi_boot_mib; fi
    rm -f "$boot_img"
    local label
    if [[ $variant == generic ]]; then label=DDC-EFI; else label=RASPIFIRM; fi
    mkfs.vfat -F 32 -n "$label" -i "$boot_volid" -C "$boot_img" $((boot_mib * 1024)) >/dev/null
    # mtools: no mount. Times of the files come from the tree (clamped below).
    find "$bootdir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    MTOOLS_SKIP_CHECK=1 mcopy -s -p -Q -m -i "$boot_img" "$bootdir"/* ::/

    # Partition table on the image file: 1 MiB alignment, then boot, then root.
    local start=2048 boot_sectors=$((boot_mib * 2048)) root_sectors=$((root_mib * 2048))
    local root_start=$((start + boot_sectors)) total_mib=$((1 + boot_mib + root_mib + 1))
    rm -f "$raw"
    truncate -s "${total_mib}M" "$raw"
    if [[ $variant == generic ]]; then
        # Root has the arm64 root type (Discoverable Partitions): systemd-repart
        # finds it by type to grow it.
        sfdisk --quiet --no-reread --no-tell-kernel "$raw" <<EOF
label: gpt
label-id: $(det_uuid disk)
first-lba: 2048
start=$start, size=$boot_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$(det_uuid esp-part), name="EFI system partition"
start=$root_start, size=$root_sectors, type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE, uuid=$(det_uuid root-part), name="ddc-root"
EOF
    else
        sfdisk --quiet --no-reread --no-tell-kernel "$raw" <<EOF
label: dos
label-id: 0x$(det_hex diskid 8)
start=$start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
EOF
    fi
    dd if="$boot_img" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
    dd if="$root_img" of="$raw" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
    rm -f "$root_img" "$boot_img"
    sizes[raw_bytes]=$(stat -c %s "$raw")
    sizes[root_fs_mib]=$root_mib
    sizes[root_content_mib]=$used_mib
    sizes[boot_partition_mib]=$boot_mib
}

# ----------------------------------------------------------------------------
# 6. compress + outputs
# ----------------------------------------------------------------------------
compress() {
    mkdir -p "$out"
    local name="ddc-$variant-$arch"
    rm -f "$out/$name.img.xz" "$out/$name.img"
    nice -n 10 xz -T0 "-$xz_level" --stdout "$work/disk.img" >"$out/$name.img.xz.tmp"
    mv "$out/$name.img.xz.tmp" "$out/$name.img.xz"
    sizes[xz_bytes]=$(stat -c %s "$out/$name.img.xz")
    if [[ $keep_raw == 1 ]]; then
        mv "$work/disk.img" "$out/$name.img"
    else
        rm -f "$work/disk.img"
    fi
}

declare -A sizes=()
write_manifest() {
    local name="ddc-$variant-$arch" git_commit git_dirty
    git_commit=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
    git_dirty=$(git -C "$repo" status --porcelain 2>/dev/null | wc -l)
    local tfile="$work/all-timings"
    : >"$tfile"
    local k
    for k in "${!timings[@]}"; do printf '%s %s\n' "$k" "${timings[$k]}" >>"$tfile"; done
    cat "$work/timings" >>"$tfile"
    local sfile="$work/sizes"
    : >"$sfile"
    for k in "${!sizes[@]}"; do printf '%s %s\n' "$k" "${sizes[$k]}" >>"$sfile"; done
    # The manifest's Python is its own file (linted, no shell values pasted into code).
    local src args=()
    for src in "${sources[@]}"; do args+=("--debian-source=$src"); done
    "$ansible_venv/bin/python" "$here/write-manifest.py" "$out/$name.manifest.json" \
        --name="$name" --variant="$variant" --arch="$arch" --work="$work" --here="$here" \
        --wheelhouse="$wheelhouse" --source-date-epoch="$SOURCE_DATE_EPOCH" \
        --git-commit="$git_commit" --git-dirty="$git_dirty" --suite="$suite" \
        --snapshot="$snapshot" --variant-packages="${variant_packages[*]}" \
        --base-tar="$base_tar" --base-cached="$base_cached" --root-uuid="$root_uuid" \
        --boot-volid="$boot_volid_fstab" --sizes="$sfile" --timings="$tfile" "${args[@]}"
    (cd "$out" && sha256sum -- *.img.xz *.manifest.json >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
}

# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
usage() {
    echo "usage: $0 generic|rpi" >&2
    exit 2
}

set_paths() {
    work="$work_root/$variant"
    rootfs="$work/rootfs"
    bootdir="$work/boot"
    wheelhouse="$work/wheelhouse"
    root_uuid=$(det_uuid rootfs)
    boot_volid=$(det_hex bootfs 8)
    boot_volid_fstab="${boot_volid:0:4}-${boot_volid:4:4}"
    boot_volid_fstab=${boot_volid_fstab^^}
}

main() {
    if [[ ${1:-} == --provision-ns ]]; then
        # Internal: the provisioning step inside its private mount namespace.
        variant=$2
        set_paths
        provision_ns
        return 0
    fi

    variant=${1:-}
    case "$variant" in
        generic | rpi) ;;
        *) usage ;;
    esac
    set_paths
    export variant work rootfs bootdir wheelhouse root_uuid boot_volid boot_volid_fstab
    t_start=$(date +%s)
    log "building ddc-$variant-$arch (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
    check_host
    compute_base_inputs
    timed mmdebstrap build_base
    timed unpack unpack_rootfs
    : >"$work/timings"
    ensure_ansible_venv
    export ansible_venv py_version
    timed wheelhouse build_wheelhouse
    timed provision provision
    timed assemble assemble
    timed compress compress
    timings[total]=$(($(date +%s) - t_start))
    write_manifest
    log "done in ${timings[total]} s: $out/ddc-$variant-$arch.img.xz ($((sizes[xz_bytes] / 1048576)) MiB compressed, $((sizes[raw_bytes] / 1048576)) MiB raw)"
}

# Everything above is definitions; bash has read the whole file before main
# runs, so editing the script during a build cannot derail it.
main "$@"; exit $?

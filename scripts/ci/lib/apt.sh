# shellcheck shell=bash
# Sourced by the set-up scripts: install the Debian packages that are missing, and
# remember which ones the project installed (one name a line in $DDC_APT_RECORD), so
# that scripts/ci/cold-start.sh can take exactly those away again.
#
#   . scripts/ci/lib/apt.sh
#   ddc_apt_install iperf3 nftables            # only what is missing
#   ddc_apt_install -t bookworm-backports qemu-user-static   # from that suite, even if
#                                              # an older version is installed
DDC_APT_RECORD=${DDC_APT_RECORD:-/var/lib/ddc-ci/apt-installed}
_ddc_apt_updated=

ddc_apt_missing() { # PACKAGE...: those not installed, one a line
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            printf '%s\n' "$p"
    done
}

ddc_apt_record() { # PACKAGE...: note them as installed by the project
    (($#)) || return 0
    mkdir -p "$(dirname "$DDC_APT_RECORD")"
    printf '%s\n' "$@" >>"$DDC_APT_RECORD"
}

ddc_apt_update() {
    [[ -n $_ddc_apt_updated ]] && return 0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _ddc_apt_updated=1
}

ddc_apt_install() { # [-t SUITE] PACKAGE...
    local suite=() todo=()
    if [[ ${1:-} == -t ]]; then
        suite=(-t "$2")
        shift 2
        todo=("$@")  # an explicit suite upgrades what is there too
    else
        mapfile -t todo < <(ddc_apt_missing "$@")
    fi
    ((${#todo[@]})) || return 0
    local new
    mapfile -t new < <(ddc_apt_missing "${todo[@]}")
    ddc_apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${suite[@]}" "${todo[@]}" >/dev/null || return 1
    ddc_apt_record "${new[@]}"
}

ddc_apt_install_newest_qemu() { # PACKAGE...: QEMU packages at version >= 9
    # Debian 12 has QEMU 7.2: its qemu-user cannot emulate execveat (arm64
    # containers with systemd >= 255; fixed in 8) and its qemu-system-aarch64 has no
    # Raspberry Pi 4 machine (raspi4b came with 9.0). bookworm-backports has QEMU 10;
    # Debian 13 has it in main. Only packages older than 9 are upgraded (one QEMU
    # version on the host).
    local p ver old=()
    for p in "$@"; do
        ver=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
        (($(sed -E 's/^([0-9]+:)?([0-9]+).*/\2/' <<<"${ver:-0}") < 9)) && old+=("$p")
    done
    ((${#old[@]})) || return 0
    # shellcheck disable=SC1091
    . /etc/os-release
    if [[ ${VERSION_CODENAME:-} != bookworm ]]; then
        ddc_apt_install "${old[@]}"
        return
    fi
    local bpo=/etc/apt/sources.list.d/ddc-bookworm-backports.sources
    if [[ ! -f $bpo ]]; then
        printf '%s\n' \
            "# Written by scripts/ci/lib/apt.sh (DDC): QEMU >= 9 (qemu-user for arm64" \
            "# containers, qemu-system-aarch64 -M raspi4b for the Pi image boot test)." \
            "Types: deb" \
            "URIs: ${DDC_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
            "Suites: bookworm-backports" \
            "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$bpo"
        _ddc_apt_updated=  # the new suite's lists
    fi
    ddc_apt_install -t bookworm-backports "${old[@]}"
}

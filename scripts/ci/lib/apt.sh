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

#!/usr/bin/env bash
# Prepare a Debian 12/13 host (as root) to build the DDC test images and run
# the molecule scenarios of ansible/ under podman, arm64 included (qemu-user).
#
# Idempotent: safe to run on every CI run; each step checks before it acts.
#
#   scripts/ci/setup-podman.sh            # everything
#   DDC_SKIP_APT=1 scripts/ci/setup-podman.sh   # packages already there
#
# Environment:
#   DDC_ANSIBLE_VENV   venv for ansible/molecule (default /opt/ddc-ansible-venv)
#   DDC_PYTHON         interpreter used to create it (default /usr/bin/python3)
#   DDC_ULIMIT_NOFILE  default container nofile limit (default min(10000, hard))
#   DDC_ULIMIT_NPROC   default container nproc limit (default min(4096, hard))
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${DDC_ANSIBLE_VENV:-/opt/ddc-ansible-venv}"
python="${DDC_PYTHON:-/usr/bin/python3}"

log() { printf '[setup-podman] %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"
    exit 1
fi

# --- 1. Debian packages ------------------------------------------------------
pkgs=(
    podman runc conmon containernetworking-plugins
    uidmap fuse-overlayfs slirp4netns passt
    mmdebstrap debian-archive-keyring arch-test
    binfmt-support
    python3-venv python3-pip
    systemd  # systemd-analyze for unit verification
)
# shellcheck source=scripts/ci/lib/apt.sh
. "$here/lib/apt.sh"
mapfile -t missing < <(ddc_apt_missing "${pkgs[@]}")
if [[ -z "${DDC_SKIP_APT:-}" && ${#missing[@]} -gt 0 ]]; then
    log "installing: ${missing[*]}"
    # passt is not in bookworm's main archive on every mirror; retry without it.
    if ! ddc_apt_install "${missing[@]}"; then
        log "retrying without passt"
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | grep -vx passt)
        ddc_apt_install "${missing[@]}"
    fi
else
    log "Debian packages present"
fi

# --- 1b. qemu-user >= 8 ----------------------------------------------------
# systemd >= 255 (Debian 13) starts every service through systemd-executor
# with execveat(fd, "", AT_EMPTY_PATH). qemu 7.2 (Debian 12) does not
# emulate execveat: in an arm64 container no unit starts (Result=resources).
# Debian 12 gets qemu 10 from bookworm-backports; Debian 13 has it.
if [[ -z "${DDC_SKIP_APT:-}" ]]; then
    ddc_apt_install_newest_qemu qemu-user-static
fi

# --- 2. containers.conf: runc (crun fails on this cgroup layout), ulimits ----
hard_nofile=$(ulimit -Hn)
hard_nproc=$(ulimit -Hu)
min() { if [[ $1 == unlimited ]]; then echo "$2"; elif (( $1 < $2 )); then echo "$1"; else echo "$2"; fi; }
nofile="${DDC_ULIMIT_NOFILE:-$(min "$hard_nofile" 10000)}"
nproc="${DDC_ULIMIT_NPROC:-$(min "$hard_nproc" 4096)}"
conf=/etc/containers/containers.conf
want=$(cat <<EOF
# Written by scripts/ci/setup-podman.sh (DDC). crun fails on this host's
# cgroup layout; rlimits may not be raised above the current hard limits.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
EOF
)
mkdir -p /etc/containers
if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
    [[ -f $conf ]] && cp -a "$conf" "$conf.ddc-bak"
    printf '%s\n' "$want" >"$conf"
    log "wrote $conf"
fi

# --- 3. binfmt_misc for arm64 under qemu-user --------------------------------
# Registered from qemu's own binfmt.d file and proven with an arm64 binary.
"$here/register-binfmt.sh"

# --- 4. ansible / molecule venv ---------------------------------------------
req="$repo/requirements/ansible.txt"
stamp="$venv/.ddc-requirements.sha256"
want_hash=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x $venv/bin/molecule ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$want_hash" ]]; then
    log "creating venv $venv from $req"
    [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
    export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -r "$req"
    echo "$want_hash" >"$stamp"
else
    log "venv $venv up to date"
fi

podman --version >&2
"$venv/bin/ansible" --version | sed -n 1p >&2
log "done"

#!/usr/bin/env bash
# Run the molecule tests of the Ansible roles (create, prepare, converge,
# idempotence, verify, destroy) in podman, on the arm64 image by default.
#
#   scripts/ci/molecule.sh                  # lint + all five roles in one container (arm64, qemu-user)
#   scripts/ci/molecule.sh amd64            # the same on the native amd64 image
#   scripts/ci/molecule.sh amd64 site       # site.yml on an ingress and an egress container
#   DDC_MOLECULE_ARCH=amd64 scripts/ci/molecule.sh
#   DDC_MOLECULE_MODE=roles scripts/ci/molecule.sh     # one scenario (container) per role
#   scripts/ci/molecule.sh arm64 kernel_tuning vector   # those roles' own scenarios
#   DDC_MOLECULE_LINT=0 ...                 # skip yamllint / ansible-lint
#
# Modes: "appliance" (default) runs ansible/molecule/appliance: the five
# roles converged together in one container, then each role's own verify
# playbook - the per-role scenarios' checks at a fraction of their cost
# under qemu-user (every Ansible task there costs seconds). "site" runs
# ansible/molecule/site: site.yml on two containers, records crossing from
# one to the other. "roles" runs ansible/roles/<role>/molecule/default one
# by one.
#
# Needs: scripts/ci/setup-podman.sh (podman, qemu, venv) - run here when
# the venv is missing - and the image, built (or found cached) here with
# scripts/ci/build-base-image.sh ARCH.
# Prints a timing line per role and a final "N passed, N failed" line.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${DDC_ANSIBLE_VENV:-/opt/ddc-ansible-venv}"

arch="${DDC_MOLECULE_ARCH:-arm64}"
if [[ $# -gt 0 && ($1 == arm64 || $1 == amd64) ]]; then
    arch="$1"
    shift
fi
export DDC_MOLECULE_ARCH="$arch"
# CAP_SYS_ADMIN lets systemd-networkd run in the native container; under
# qemu-user it would break every sandboxed unit (see the diode_network scenario).
if [[ "$arch" == "$(dpkg --print-architecture)" ]]; then
    export DDC_MOLECULE_EXTRA_CAP="${DDC_MOLECULE_EXTRA_CAP:-SYS_ADMIN}"
fi

mode="${DDC_MOLECULE_MODE:-appliance}"
if [[ $# -gt 0 && ($1 == appliance || $1 == site) ]]; then
    mode="$1"
    shift
fi
roles=("$@")
[[ ${#roles[@]} -gt 0 ]] && mode=roles
if [[ $mode == roles && ${#roles[@]} -eq 0 ]]; then
    for d in "$repo"/ansible/roles/*/molecule/default; do
        [[ -f $d/molecule.yml ]] || continue
        r="${d%/molecule/default}"
        roles+=("${r##*/}")
    done
fi

log() { printf '[molecule.sh] %s\n' "$*" >&2; }

if [[ ! -x $venv/bin/molecule ]]; then
    "$here/setup-podman.sh"
fi
"$repo/scripts/ci/build-base-image.sh" "$arch" || exit 1

export PATH="$venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 NO_COLOR=1 PY_COLORS=0
export ANSIBLE_CONFIG="$repo/ansible/ansible.cfg"
logdir="${DDC_MOLECULE_LOG_DIR:-$repo/build/molecule}"
mkdir -p "$logdir"

# The ddc role installs the daemon from a wheelhouse (no internet on targets).
if [[ $mode != roles || " ${roles[*]} " == *" ddc "* ]]; then
    log "building the wheelhouse for $arch (ddc role)"
    "$repo/scripts/build-wheelhouse.sh" "$arch" 3.13 >&2 || exit 1
fi

passed=0
failed=0
failed_names=()
total_start=$(date +%s)

if [[ "${DDC_MOLECULE_LINT:-1}" != 0 ]]; then
    start=$(date +%s)
    if (cd "$repo/ansible" && yamllint --strict . && ansible-lint --offline) >"$logdir/lint.log" 2>&1; then
        passed=$((passed + 1))
        log "lint: ok ($(($(date +%s) - start)) s)"
    else
        failed=$((failed + 1))
        failed_names+=(lint)
        log "lint: FAILED ($(($(date +%s) - start)) s), see $logdir/lint.log"
        tail -40 "$logdir/lint.log" >&2
    fi
fi

# NAME DIR [ARGS...]: `molecule test ARGS` in DIR, logged to $logdir/NAME-$arch.log.
run_scenario() {
    local name=$1 dir=$2 start log
    shift 2
    start=$(date +%s)
    log="$logdir/$name-$arch.log"
    if (cd "$dir" && molecule test "$@") >"$log" 2>&1; then
        passed=$((passed + 1))
        log "$name ($arch): ok ($(($(date +%s) - start)) s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        log "$name ($arch): FAILED ($(($(date +%s) - start)) s), see $log"
        grep -E 'fatal:|FAILED!|CRITICAL|ERROR|Idempotence|^\*  =>' "$log" | head -30 >&2
    fi
}

if [[ $mode == appliance || $mode == site ]]; then
    run_scenario "$mode" "$repo/ansible" -s "$mode"
fi
for role in "${roles[@]}"; do
    run_scenario "$role" "$repo/ansible/roles/$role"
done

log "total $(($(date +%s) - total_start)) s on $arch${failed_names[*]:+; failed: ${failed_names[*]}}"
echo "molecule: $passed passed, $failed failed"
[[ $failed -eq 0 ]]

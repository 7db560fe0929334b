#!/usr/bin/env bash
# Put this machine back into a new machine's state as far as the project is
# concerned, so that the next `.ci/run` is a cold one (nothing cached, nothing
# registered, nothing running). A green run on a machine that ran the project
# before once hid a binfmt_misc handler only an earlier run had registered.
#
#   scripts/ci/cold-start.sh            # as root
#   scripts/ci/cold-start.sh --keep-packages   # leave the Debian packages installed
#
# What it undoes, in this order:
#   1. what the project's scripts and tests started: `ddc run` daemons, Kafka
#      brokers (kafka.Kafka), iperf3, qemu-system-aarch64 boots, the molecule and
#      wheel-build containers (podman, names ddc-*), the tests' network namespaces;
#   2. the binfmt_misc handlers of qemu (register-binfmt.sh registers them);
#   3. container images localhost/ddc-* and podman's storage of them;
#   4. caches: pip (~/.cache/pip), Kafka jars and Maven's repository
#      (~/.cache/ddc), /var/cache/ddc (base root file systems, the image build's
#      mmdebstrap tarball, the wheel build's apt downloads), molecule's and
#      ansible's (~/.cache/molecule, ~/.ansible);
#   5. the venvs: /opt/ddc-ansible-venv, /opt/ddc-image-venv,
#      /opt/ddc-image-test-venv, and this checkout's .venv and build/;
#   6. the Debian packages the set-up installed (recorded one per line in
#      /var/lib/ddc-ci/apt-installed by scripts/ci/lib/apt.sh), the
#      bookworm-backports source it added, the downloaded .debs, and
#      /etc/containers/containers.conf (restored from its backup if there was one).
#
# Prints what it removed and the time it took.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
keep_packages=false
for arg in "$@"; do
    case "$arg" in
        --keep-packages) keep_packages=true ;;
        *)
            echo "usage: $0 [--keep-packages]" >&2
            exit 2
            ;;
    esac
done

log() { printf '[cold-start] %s\n' "$*" >&2; }
if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"
    exit 2
fi
start=$(date +%s)

# rm_path PATH...: remove and say so (only what exists).
rm_path() {
    local p
    for p in "$@"; do
        if [[ -e $p || -L $p ]]; then
            rm -rf -- "$p" && log "removed $p"
        fi
    done
}

# --- 1. processes, containers, namespaces ------------------------------------
# kill_matching PATTERN: SIGTERM, 5 s grace, then SIGKILL (pgrep -f on the command line).
kill_matching() {
    local pattern=$1 pids
    pids=$(pgrep -f -- "$pattern" | grep -vx "$$" || true)
    [[ -n $pids ]] || return 0
    log "stopping $(wc -w <<<"$pids") process(es) matching '$pattern'"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null
    for _ in $(seq 50); do
        pgrep -f -- "$pattern" >/dev/null || return 0
        sleep 0.1
    done
    pkill -KILL -f -- "$pattern" 2>/dev/null || true
}
kill_matching 'appliance.cli run|ddc run'
kill_matching 'kafka\.Kafka'
kill_matching 'iperf3 -s'
kill_matching 'qemu-system-aarch64'
if command -v podman >/dev/null; then
    mapfile -t containers < <(podman ps -a --format '{{.Names}}' 2>/dev/null | grep '^ddc' || true)
    if ((${#containers[@]})); then
        podman rm -f -t 5 "${containers[@]}" >/dev/null 2>&1
        log "removed containers: ${containers[*]}"
    fi
    mapfile -t pods < <(podman pod ls --format '{{.Name}}' 2>/dev/null | grep '^ddc' || true)
    if ((${#pods[@]})); then
        podman pod rm -f "${pods[@]}" >/dev/null 2>&1
        log "removed pods: ${pods[*]}"
    fi
    mapfile -t networks < <(podman network ls --format '{{.Name}}' 2>/dev/null | grep '^ddc' || true)
    if ((${#networks[@]})); then
        podman network rm -f "${networks[@]}" >/dev/null 2>&1
        log "removed podman networks: ${networks[*]}"
    fi
fi
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^ddc' || true); do
    ip netns del "$ns" && log "removed network namespace $ns"
done

# --- 2. binfmt_misc ----------------------------------------------------------
misc=/proc/sys/fs/binfmt_misc
if [[ -e $misc/status ]]; then
    for entry in "$misc"/qemu-*; do
        [[ -e $entry ]] || continue
        echo -1 >"$entry" && log "unregistered binfmt handler ${entry##*/}"
    done
    if ! ls "$misc" | grep -qvx -e register -e status; then
        umount "$misc" 2>/dev/null && log "unmounted $misc"
    fi
fi

# --- 3. container images -----------------------------------------------------
if command -v podman >/dev/null; then
    mapfile -t images < <(podman images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null |
        grep -E '^localhost/ddc' || true)
    if ((${#images[@]})); then
        podman rmi -f "${images[@]}" >/dev/null 2>&1
        log "removed images: ${images[*]}"
    fi
    podman image prune -f >/dev/null 2>&1 || true
fi

# --- 4. caches -----------------------------------------------------------------
rm_path "${PIP_CACHE_DIR:-$HOME/.cache/pip}" "${DDC_CACHE:-$HOME/.cache/ddc}" \
    /var/cache/ddc "$HOME/.cache/molecule" "$HOME/.cache/ansible-compat" "$HOME/.ansible"

# --- 5. venvs and this checkout's build output --------------------------------
rm_path "${DDC_ANSIBLE_VENV:-/opt/ddc-ansible-venv}" /opt/ddc-image-venv \
    "${DDC_IMAGE_TEST_VENV:-/opt/ddc-image-test-venv}" "$repo/.venv" "$repo/build" \
    "$repo/image/out"

# --- 6. Debian packages and apt configuration ---------------------------------
record=/var/lib/ddc-ci/apt-installed
if ! $keep_packages; then
    if [[ -s $record ]]; then
        mapfile -t pkgs < <(sort -u "$record")
        mapfile -t present < <(for p in "${pkgs[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && echo "$p"
        done)
        if ((${#present[@]})); then
            log "purging packages the set-up installed: ${present[*]}"
            DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${present[@]}" >/dev/null 2>&1 ||
                log "apt-get purge failed; packages left: ${present[*]}"
            DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -qq >/dev/null 2>&1 || true
        fi
    fi
    rm_path "$record" /etc/apt/sources.list.d/ddc-bookworm-backports.sources
    apt-get clean
    conf=/etc/containers/containers.conf
    if [[ -f $conf.ddc-bak ]]; then
        mv -f "$conf.ddc-bak" "$conf" && log "restored $conf from its backup"
    elif grep -qs 'Written by scripts/ci/setup-podman.sh' "$conf"; then
        rm_path "$conf"
    fi
    rm_path /var/lib/containers/storage
fi

log "done in $(($(date +%s) - start)) s"

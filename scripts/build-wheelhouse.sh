#!/usr/bin/env bash
# Build the wheelhouse the ddc Ansible role (and the image build) installs from, so the
# target needs no internet: this repo's wheel plus binary wheels of its dependencies
# for the target's architecture and Python, and requirements.txt pinning each of them to
# its sha256 (scripts/wheelhouse_lock.py), which the role installs with --require-hashes.
#
#   scripts/build-wheelhouse.sh ARCH PYVER [OUTDIR]
#   scripts/build-wheelhouse.sh arm64 3.13          # Debian 13 on a Pi or Graviton
#   scripts/build-wheelhouse.sh amd64 3.13
#
# The ddc wheel carries a C extension (appliance.protocol._native, linked against
# OpenSSL 3's libcrypto), so it is built for one architecture and one Python: inside a
# podman container of the target's Debian 13 (localhost/ddc-trixie-ARCH, made or found
# cached by scripts/ci/build-base-image.sh; arm64 runs under qemu-user), whose
# python3 must be PYVER. In the same container the built wheel, unpacked on its own,
# must pass `python3 -m appliance.protocol.selfcheck`: no wheel leaves here unproven on
# its architecture. Needs root and scripts/ci/setup-podman.sh (podman, runc, qemu-user).
#
# Cache: the wheel is kept in build/native-wheels/ under a hash of the sources that go
# into it (setup.py, pyproject.toml, README.md, appliance/), ARCH, PYVER and this
# script; a flock makes a concurrent caller (CI runs the arm64 molecule scenario and
# image/build.sh at once) wait for the first build and reuse it. The build container's
# apt downloads are kept in /var/cache/ddc/wheel-build/ (DDC_WHEEL_BUILD_CACHE) when
# that is writable: only faster, never needed.
# Measured on 2 cores of an x86-64 host: a cold arm64 build (qemu-user) takes 160-185 s
# (apt-get install of gcc, python3-dev, libssl-dev: about 85 s even with the .debs
# cached, 125 s then in all; compiling and the selfcheck: about 30 s); amd64 15 s; a
# cache hit 2-3 s. Add pip download of the dependencies (a few seconds, pip cache warm).
#
# The dependencies' wheels are downloaded on the host with `pip download --platform`
# (cached by pip under ~/.cache/pip). PYTHON picks the interpreter that runs pip
# (default python3; any 3.11+ with pip).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
self="$repo/scripts/build-wheelhouse.sh"
usage="usage: build-wheelhouse.sh ARCH PYVER [OUTDIR]"
arch=${1:?$usage}
pyver=${2:?$usage}
out=$(realpath -m "${3:-$repo/build/wheelhouse-$arch-py$pyver}")
case "$arch" in
    arm64) machine=aarch64 ;;
    amd64) machine=x86_64 ;;
    *) echo "build-wheelhouse.sh: ARCH must be arm64 or amd64, not $arch" >&2; exit 2 ;;
esac
[[ $pyver =~ ^3\.[0-9]+$ ]] || { echo "build-wheelhouse.sh: PYVER must look like 3.13, not $pyver" >&2; exit 2; }
# Debian 13's glibc is 2.41: any manylinux wheel up to that runs there.
platforms=(--platform "manylinux2014_$machine")
for m in $(seq 17 41); do platforms+=(--platform "manylinux_2_${m}_$machine"); done
PYTHON=${PYTHON:-python3}
image="localhost/ddc-trixie-$arch:latest"
log() { printf '[build-wheelhouse %s] %s\n' "$arch" "$*" >&2; }
die() { echo "build-wheelhouse.sh: $*" >&2; exit 1; }

command -v podman >/dev/null || die "podman not found: run scripts/ci/setup-podman.sh first"

# From a clean copy of the sources: no stale build/, .so or __pycache__ of the work
# tree gets in and nothing is written into the repository.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -a "$repo/setup.py" "$repo/pyproject.toml" "$repo/README.md" "$repo/appliance" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
find "$src" \( -name '*.so' -o -name '*.pyc' -o -name '*.egg-info' \) -prune -exec rm -rf {} +

# --- 1. the ddc wheel (cached) ----------------------------------------------------
key=$( {
    (cd "$src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    sha256sum <"$self"
    echo "arch=$arch pyver=$pyver"
} | sha256sum | cut -c1-16)
cache="$repo/build/native-wheels"
entry="$cache/$arch-py$pyver-$key"
mkdir -p "$cache"
exec 8>"$entry.lock"
if ! flock -n 8; then
    log "waiting for the build of $(basename "$entry") by another caller"
    flock 8
fi

if compgen -G "$entry/*.whl" >/dev/null; then
    log "ddc wheel from the cache: $(basename "$entry")"
else
    # The image: made here if missing or out of date (a no-op otherwise; locked there).
    "$repo/scripts/ci/build-base-image.sh" "$arch" 8>&- ||
        die "no $image: run scripts/ci/setup-podman.sh, then scripts/ci/build-base-image.sh $arch"
    apt_opts=()
    apt_cache="${DDC_WHEEL_BUILD_CACHE:-/var/cache/ddc/wheel-build}/apt-$arch"
    if mkdir -p "$apt_cache/archives/partial" "$apt_cache/lists/partial" 2>/dev/null && [[ -w $apt_cache ]]; then
        apt_opts=(-v "$apt_cache/archives:/var/cache/apt/archives" -v "$apt_cache/lists:/var/lib/apt/lists")
        # The apt cache is shared by every checkout on this machine, the lock above is
        # per checkout: two builds at once would fight over apt's own lock in it.
        exec 7>"$apt_cache.lock"
        flock 7
    fi
    tmp="$entry.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "building the ddc wheel in $image (Python $pyver)"
    start=$(date +%s)
    # shellcheck disable=SC2016 # expanded in the container
    rc=0
    podman run --rm --runtime runc --arch "$arch" --network host \
        -e PYVER="$pyver" -e ARCH="$arch" -e DEBIAN_FRONTEND=noninteractive \
        -v "$src:/src" -v "$tmp:/out" "${apt_opts[@]}" \
        "$image" /bin/sh -euc '
            have=$(python3 -c "import sys; print(\"%d.%d\" % sys.version_info[:2])")
            if [ "$have" != "$PYVER" ]; then
                echo "build-wheelhouse.sh: the $ARCH build container has Python $have, not $PYVER (the target must run the same Debian release)" >&2
                exit 3
            fi
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends gcc libc6-dev python3-dev libssl-dev \
                python3-setuptools python3-wheel python3-pip >/dev/null
            python3 -m pip wheel --quiet --disable-pip-version-check --no-deps \
                --no-build-isolation -w /out /src
            mkdir /tmp/unpacked
            python3 -m zipfile -e /out/*.whl /tmp/unpacked
            cd /
            PYTHONPATH=/tmp/unpacked python3 -m appliance.protocol.selfcheck
        ' 8>&- 7>&- || rc=$?
    exec 7>&-  # the shared apt cache is free again
    if ((rc)); then
        rm -rf "$tmp"
        ((rc == 3)) && exit 1 # the Python version message says it all
        die "building or checking the ddc wheel for $arch failed (see above)"
    fi
    wheels=("$tmp"/*.whl)
    want="ddc_appliance-*-cp${pyver/./}-cp${pyver/./}-linux_$machine.whl"
    # shellcheck disable=SC2053 # $want is a glob on purpose
    [[ ${#wheels[@]} -eq 1 && $(basename "${wheels[0]}") == $want ]] ||
        die "expected one $want, got: $(cd "$tmp" && echo *)"
    mv "$tmp" "$entry"
    log "ddc wheel built and self-checked in $(($(date +%s) - start)) s: $(basename "${wheels[0]}")"
    # Keep the three newest builds per ARCH and PYVER.
    find "$cache" -maxdepth 1 -type d -name "$arch-py$pyver-*" ! -name '*.tmp.*' -printf '%T@ %p\n' |
        sort -rn | tail -n +4 | cut -d' ' -f2- | while read -r old; do rm -rf "$old" "$old.lock"; done
fi

rm -rf "$out"
mkdir -p "$out"
cp "$entry"/*.whl "$out/"
exec 8>&-

# --- 2. the dependencies' wheels, from PyPI --------------------------------------------
mapfile -t reqs < <("$PYTHON" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
)
"$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary :all: \
    "${platforms[@]}" --python-version "$pyver" --implementation cp \
    --abi "cp${pyver/./}" --abi abi3 --abi none -d "$out" "${reqs[@]}"
# --- 3. the lock the ddc role installs with (--require-hashes) ---------------------------
"$PYTHON" "$repo/scripts/wheelhouse_lock.py" "$out"
(cd "$out" && printf '  %s\n' *)
echo "wheelhouse: $out"

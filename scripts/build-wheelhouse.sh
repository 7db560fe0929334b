#!/usr/bin/env bash
# Build the wheelhouse the ddc Ansible role (and the image build) installs from, so the
# target needs no internet: this repo's wheel plus binary wheels of its dependencies
# for the target's architecture and Python.
#
#   scripts/build-wheelhouse.sh ARCH PYVER [OUTDIR]
#   scripts/build-wheelhouse.sh arm64 3.13          # Debian 13 on a Pi or Graviton
#   scripts/build-wheelhouse.sh amd64 3.13
#
# zfec publishes no arm64 wheels: the target uses Debian's python3-zfec instead (the
# role makes the venv with --system-site-packages), so zfec is left out here.
# Downloads are cached by pip under ~/.cache/pip. PYTHON picks the interpreter that
# runs pip (default python3; any 3.11+ with pip).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
usage="usage: build-wheelhouse.sh ARCH PYVER [OUTDIR]"
arch=${1:?$usage}
pyver=${2:?$usage}
out=$(realpath -m "${3:-$repo/build/wheelhouse-$arch-py$pyver}")
case "$arch" in
    arm64) machine=aarch64 ;;
    amd64) machine=x86_64 ;;
    *) echo "build-wheelhouse.sh: ARCH must be arm64 or amd64, not $arch" >&2; exit 2 ;;
esac
# Debian 13's glibc is 2.41: any manylinux wheel up to that runs there.
platforms=(--platform "manylinux2014_$machine")
for m in $(seq 17 41); do platforms+=(--platform "manylinux_2_${m}_$machine"); done
PYTHON=${PYTHON:-python3}

rm -rf "$out"
mkdir -p "$out"
# From a clean copy of the sources: no stale build/ of the work tree gets in and
# nothing is written into the repository.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -a "$repo/pyproject.toml" "$repo/README.md" "$repo/appliance" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$out" "$src"
# The runtime requirements, from pyproject.toml, minus zfec (see above).
mapfile -t reqs < <("$PYTHON" - "$repo/pyproject.toml" <<'PY'
import re, sys, tomllib
with open(sys.argv[1], "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
print("\n".join(d for d in deps if re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() != "zfec"))
PY
)
"$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary :all: \
    "${platforms[@]}" --python-version "$pyver" --implementation cp \
    --abi "cp${pyver/./}" --abi abi3 --abi none -d "$out" "${reqs[@]}"
ls "$out" | sed 's/^/  /'
echo "wheelhouse: $out"

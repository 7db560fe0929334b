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
# Downloads are cached by pip under ~/.cache/pip.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: build-wheelhouse.sh ARCH PYVER [OUTDIR]}
pyver=${2:?usage: build-wheelhouse.sh ARCH PYVER [OUTDIR]}
out=${3:-build/wheelhouse-$arch-py$pyver}
case "$arch" in
    arm64) platforms=(manylinux_2_28_aarch64 manylinux2014_aarch64 manylinux_2_17_aarch64) ;;
    amd64) platforms=(manylinux_2_28_x86_64 manylinux2014_x86_64 manylinux_2_17_x86_64) ;;
    *) echo "build-wheelhouse.sh: ARCH must be arm64 or amd64, not $arch" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
rm -rf "$out"
mkdir -p "$out"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$out" .
# The runtime requirements, from pyproject.toml, minus zfec (see above).
mapfile -t reqs < <("$PYTHON" - <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.lower().startswith("zfec")))
PY
)
plat_args=()
for p in "${platforms[@]}"; do plat_args+=(--platform "$p"); done
"$PYTHON" -m pip download --quiet --only-binary :all: "${plat_args[@]}" \
    --python-version "$pyver" --implementation cp -d "$out" "${reqs[@]}"
ls "$out" | sed 's/^/  /'
echo "wheelhouse: $out"

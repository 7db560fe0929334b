#!/usr/bin/env bash
# The whole test suite, from a fresh clone, as root: installs every system package,
# Python package, Kafka jar and container image it needs, starts what the tests use,
# then runs ruff, mypy and pytest (unit, end-to-end, network namespaces, Kafka, Vector),
# the molecule scenarios and the deploy tests (container image, Helm, podman kube
# play). Downloads are cached under /var/cache and ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==== %s (%s)\n' "$1" "$(date +%T)"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: run as root (it installs packages and makes network namespaces)" >&2
    exit 2
fi

step "system packages"
# gcc, libc6-dev, python3-dev, libssl-dev: pip install -e builds the native module
# (appliance/protocol/_native.c, linked against OpenSSL 3's libcrypto).
# shellcheck source=scripts/ci/lib/apt.sh
. scripts/ci/lib/apt.sh
ddc_apt_install iperf3 nftables iproute2 python3-venv ca-certificates \
    gcc libc6-dev python3-dev libssl-dev

step "python environment"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'

step "Kafka brokers (Java 17, jars from Maven Central)"
./scripts/ci/install-kafka.sh

step "vector test tools (promtool, vrl-python)"
PYTHON=.venv/bin/python ./scripts/ci/install-vector-tools.sh

step "ruff"
.venv/bin/ruff check appliance tests

step "mypy"
# [tool.mypy] in pyproject.toml: appliance/protocol strictly, the rest of the package as
# far as it is typed.
.venv/bin/mypy

step "podman, qemu-user, ansible (molecule)"
./scripts/ci/setup-podman.sh

step "pytest"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration tests/vector tests/chaos
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "pytest failed (exit $rc)" >&2
    exit "$rc"
fi

# Helm for the deploy step, compiled (cold: minutes of CPU) while molecule runs; warm it
# is a cached binary. deploy.sh's own call waits for this one (flock) or retries it.
mkdir -p build
./scripts/ci/install-helm.sh >build/ci-helm.log 2>&1 &
helm_pid=$!

# Molecule and images. Lint, then site.yml converged on an ingress and an egress
# container (native amd64) with records crossing between them; then the five roles
# on arm64 through qemu-user (the appliance scenario) while the appliance images are
# built and booted under emulation (scripts/ci/image.sh): both are mostly
# single-threaded emulation, so on two cores they take about as long together as
# the longer one alone. DDC_CI_IMAGES=0 leaves the images out.
step "molecule: site.yml on two containers (amd64)"
./scripts/ci/molecule.sh amd64 site

# The Kubernetes deploy surface, from the amd64 base image and wheelhouse molecule has
# just used: the container image, Helm lint / template / schema, the Vector sidecar's
# manifests, and an ingress and an egress pod under podman kube play (tests/deploy).
step "deploy: container image, Helm chart, podman kube play (amd64)"
wait "$helm_pid" || { echo "background Helm install failed:"; cat build/ci-helm.log; }
./scripts/ci/deploy.sh

image_pid=
image_log=build/ci-image.log
if [ "${DDC_CI_IMAGES:-1}" != 0 ]; then
    step "images (in the background, log: $image_log)"
    mkdir -p build
    ./scripts/ci/image.sh >"$image_log" 2>&1 &
    image_pid=$!
fi

# The arm64 container image (its RUN steps and the native self-check under qemu-user),
# beside the arm64 molecule run: it shares that run's base image and wheel (flocked).
deploy_log=build/ci-deploy-arm64.log
step "arm64 container image (in the background, log: $deploy_log)"
./scripts/ci/deploy.sh arm64 >"$deploy_log" 2>&1 &
deploy_pid=$!

step "molecule: the five roles on arm64 (qemu-user)"
set +e
DDC_MOLECULE_LINT=0 ./scripts/ci/molecule.sh arm64
molecule_rc=$?
wait "$deploy_pid"
deploy_rc=$?
step "arm64 container image: output"
cat "$deploy_log"
image_rc=0
if [ -n "$image_pid" ]; then
    wait "$image_pid"
    image_rc=$?
    step "images: output"
    cat "$image_log"
fi
set -e
if [ "$molecule_rc" -ne 0 ] || [ "$image_rc" -ne 0 ] || [ "$deploy_rc" -ne 0 ]; then
    echo "molecule (arm64) exit $molecule_rc, images exit $image_rc," \
        "arm64 container image exit $deploy_rc" >&2
    exit 1
fi
step "done"

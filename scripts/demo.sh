#!/usr/bin/env bash
# Fresh clone -> `ddc demo`: an ingress and an egress on loopback joined by a lossy link.
# Needs Python >= 3.11 with venv and pip, and what building the native module takes
# (a C compiler, the Python headers, OpenSSL 3's headers): run as root on Debian, this
# installs those if they are missing. Nothing else to install or start.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

build_tools_missing() {
    command -v cc >/dev/null || return 0
    [ -e /usr/include/openssl/evp.h ] || return 0
    "$PYTHON" - <<'PY' || return 0
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
    return 1
}

if [ ! -x .venv/bin/ddc ]; then
    if build_tools_missing; then
        packages="gcc libc6-dev python3-dev python3-venv libssl-dev"
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
            echo "demo.sh: installing the native module's build tools: $packages" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            # shellcheck disable=SC2086 # a word list on purpose
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                $packages >/dev/null
        else
            echo "demo.sh: building ddc's native module needs a C compiler, the Python" \
                "headers and OpenSSL's: run as root, or: sudo apt-get install $packages" >&2
            exit 1
        fi
    fi
    # pip's and setuptools' chatter (build notices, deprecation warnings) is for the
    # developer, not for someone trying the demo: kept in a log, shown only on failure.
    log=build/demo-install.log
    mkdir -p build
    "$PYTHON" -m venv .venv
    if ! { .venv/bin/pip install --quiet --upgrade pip &&
        .venv/bin/pip install --quiet -e .; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "demo.sh: installing ddc failed (log: $log)" >&2
        rm -rf .venv  # no half-made venv that the next run would take for a finished one
        exit 1
    fi
fi
exec .venv/bin/ddc demo "$@"

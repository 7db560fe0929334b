#!/usr/bin/env bash
# Fresh clone -> `ddc demo`: an ingress and an egress on loopback joined by a lossy link.
# Needs only Python >= 3.11 with venv and pip; nothing else to install or start.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/ddc ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e .
fi
exec .venv/bin/ddc demo "$@"

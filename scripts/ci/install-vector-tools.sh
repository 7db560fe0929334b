#!/usr/bin/env bash
# Install what tests/vector needs:
#   * promtool, from Debian's `prometheus` package (only the promtool binary is used);
#   * the Python packages in requirements/vector-tests.txt (vrl-python, PyYAML, pytest),
#     into the Python environment of $PYTHON (default: python3).
#
# Idempotent: a second run skips apt when promtool is already on PATH.
# Needs root for apt-get (CI and the dev machines run as root).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-vector-tools: %s\n' "$*" >&2; }

install_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        log "promtool already installed: $(promtool --version 2>&1 | head -n1)"
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "promtool is missing and installing it needs root (apt-get install prometheus)"
        exit 1
    fi

    # The prometheus package's maintainer scripts start (and enable) a Prometheus server.
    # We only want promtool: a policy-rc.d that answers 101 ("action forbidden") makes
    # invoke-rc.d / deb-systemd-invoke skip the start. Keep an existing policy file as is.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, from install-vector-tools.sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=1
    fi

    local rc=0
    # shellcheck source=scripts/ci/lib/apt.sh
    . "$repo_root/scripts/ci/lib/apt.sh"
    # --no-install-recommends (in ddc_apt_install): skip prometheus-node-exporter and friends.
    ddc_apt_install prometheus || rc=$?

    if [ "$created_policy" -eq 1 ]; then
        rm -f "$policy"
    fi
    [ "$rc" -eq 0 ] || { log "apt-get install prometheus failed ($rc)"; exit "$rc"; }

    # On a host booted with systemd the unit got enabled for the next boot: undo that and
    # make sure no server is left running (a no-op in containers without systemd).
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
    log "installed $(promtool --version 2>&1 | head -n1)"
}

install_python_packages() {
    local req="$repo_root/requirements/vector-tests.txt"
    local extra=()
    # A distribution Python (PEP 668 "externally managed") refuses plain pip installs;
    # outside a virtualenv we are on a throwaway CI/dev machine, so say so explicitly.
    if "$PYTHON" - <<'PY'
import sys, sysconfig, pathlib
in_venv = sys.prefix != sys.base_prefix
marker = pathlib.Path(sysconfig.get_paths()["stdlib"]) / "EXTERNALLY-MANAGED"
sys.exit(0 if (marker.exists() and not in_venv) else 1)
PY
    then
        extra+=(--break-system-packages)
    fi
    log "pip install -r $req into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "${extra[@]}" -r "$req"
    "$PYTHON" -c 'import vrl_python, yaml; print("vrl-python", vrl_python.__version__, "PyYAML", yaml.__version__)'
}

install_promtool
install_python_packages

"""The container image (deploy/container/Containerfile) as built for this machine: the
contract the Helm chart and a plain `podman run` rely on."""

from __future__ import annotations

import json
import subprocess

import pytest

from .support import CHART, helm

pytestmark = pytest.mark.slow


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{out.stderr}")
    return out


def _run(image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    extra = ["--entrypoint", entrypoint] if entrypoint else []
    # --no-healthcheck: podman cannot schedule it without systemd and says so on stderr.
    return _podman("run", "--rm", "--read-only", "--network", "none", "--no-healthcheck",
                   *extra, image, *args,
                   check=False)


def test_image_config(ddc_image):
    info = json.loads(_podman("image", "inspect", ddc_image).stdout)[0]
    cfg = info["Config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["ddc"]
    assert cfg["Cmd"] == ["run", "--config", "/etc/ddc/ddc.toml"]
    assert cfg["StopSignal"] == "SIGTERM"  # not the base image's SIGRTMIN+3 (systemd)
    assert info["Healthcheck"]["Test"] == ["CMD", "ddc", "status", "--file",
                                          "/run/ddc/status.json", "--check"]
    assert not cfg.get("Volumes")  # see the Containerfile: anonymous volumes would leak
    # The paths the chart renders are the image's.
    out = helm("template", "x", str(CHART), "--show-only", "templates/deployment.yaml")
    assert '["run", "--config", "/etc/ddc/ddc.toml"]' in out.stdout
    assert '"--file", "/run/ddc/status.json", "--check"' in out.stdout


def test_runs_as_ddc_on_a_read_only_root(ddc_image):
    assert _run(ddc_image, "--version").stdout.strip().startswith("ddc ")
    ident = _run(ddc_image, "-c", "id -u; id -g; touch /opt/x 2>&1 || echo read-only",
                 entrypoint="/bin/sh")
    assert ident.stdout.split()[:2] == ["10001", "10001"]
    assert "read-only" in ident.stdout
    # Nothing in the image can give root back (no sudo, no setuid file); the venv
    # carries no pip.
    tools = _run(ddc_image, "-c", "command -v sudo pip pip3; ls /opt/ddc/venv/bin; "
                 "find / -xdev -type f -perm /6000", entrypoint="/bin/sh").stdout
    assert "sudo" not in tools and "pip" not in tools and "/usr/bin/" not in tools, tools


def test_health_check_fails_without_a_daemon(ddc_image):
    out = _run(ddc_image, "status", "--file", "/run/ddc/status.json", "--check")
    assert out.returncode == 1
    assert out.stderr.strip() == \
        "ddc: error: no status file at /run/ddc/status.json: is the daemon running?"


def test_native_module_self_check_passes_in_the_image(ddc_image):
    # The build ran it too; this is the image as it ships, as the ddc user.
    out = _run(ddc_image, "-m", "appliance.protocol.selfcheck", entrypoint="python3")
    assert out.returncode == 0, out.stderr
    assert "selfcheck: native hot path ok" in out.stdout

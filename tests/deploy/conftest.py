"""Fixtures of tests/deploy: the container image (built, or found current, by
deploy/container/build.sh for this machine's architecture)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .support import REPO


def native_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="session")
def ddc_image() -> str:
    """localhost/ddc:VERSION-ARCH, from the project's base image and wheelhouse (a no-op
    when the image carries the current input hash)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/ci/setup-podman.sh (as root)")
    out = subprocess.run([str(REPO / "deploy/container/build.sh"), native_arch()],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        pytest.fail(f"deploy/container/build.sh failed:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]

"""scripts/wheelhouse_lock.py and the install the ddc role does with its output:
`pip install --no-index --find-links DIR --upgrade --require-hashes -r DIR/requirements.txt`,
run here with the real pip against real (tiny) wheels."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "scripts" / "wheelhouse_lock.py"


def make_wheel(directory: Path, dist: str, version: str, requires: str = "") -> Path:
    """A minimal pure-Python wheel (the binary distribution format: METADATA, WHEEL, RECORD)."""
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n"
    if requires:
        meta += f"Requires-Dist: {requires}\n"
    files = {
        f"{dist}.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": meta,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            data = text.encode()
            zf.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        zf.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


@pytest.fixture
def wheelhouse(tmp_path):
    house = tmp_path / "wheelhouse"
    house.mkdir()
    make_wheel(house, "ddc_appliance_demo", "1.2.0", requires="dep-demo>=1")
    make_wheel(house, "dep_demo", "2.0.1")
    subprocess.run([sys.executable, str(LOCK), str(house)], check=True)
    return house


def _install(house: Path, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
         "--find-links", str(house), "--upgrade", "--require-hashes", "--target", str(target),
         "-r", str(house / "requirements.txt")],
        capture_output=True, text=True,
    )


def test_lock_pins_every_wheel_with_its_hash(wheelhouse):
    lines = [ln for ln in (wheelhouse / "requirements.txt").read_text().splitlines()
             if not ln.startswith("#")]
    for line, wheel in zip(lines, sorted(wheelhouse.glob("*.whl")), strict=True):
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert line.endswith(f"--hash=sha256:{digest}")
    assert [ln.split(" ")[0] for ln in lines] == ["ddc-appliance-demo==1.2.0", "dep-demo==2.0.1"]


def test_pip_installs_the_locked_wheels(wheelhouse, tmp_path):
    proc = _install(wheelhouse, tmp_path / "venv")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "venv" / "dep_demo.py").read_text() == "VERSION = '2.0.1'\n"


def test_pip_refuses_a_swapped_wheel(wheelhouse, tmp_path):
    wheel = next(wheelhouse.glob("dep_demo-*.whl"))
    make_wheel(wheelhouse, "dep_demo", "2.0.1").replace(wheel)  # same name, new bytes
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("extra.txt", "tampered")
    proc = _install(wheelhouse, tmp_path / "venv")
    assert proc.returncode != 0
    assert "DO NOT MATCH THE HASHES" in proc.stderr
    assert not (tmp_path / "venv" / "dep_demo.py").exists()


def test_the_ddc_role_installs_from_the_lock_with_upgrade():
    import yaml

    tasks = yaml.safe_load((REPO / "ansible/roles/ddc/tasks/main.yml").read_text())
    argv = next(t["ansible.builtin.set_fact"]["ddc_pip_argv"] for t in tasks
                if "ddc_pip_argv" in (t.get("ansible.builtin.set_fact") or {}))
    for flag in ("'--upgrade'", "'--require-hashes'", "'/opt/ddc/wheelhouse/requirements.txt'"):
        assert flag in argv, f"the ddc role's pip install lacks {flag}"

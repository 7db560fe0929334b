"""Operating-system conventions of the `ddc` command: the version comes from the installed
package's metadata, and a configuration error exits 78 (EX_CONFIG), which ddc@.service keeps
systemd from restarting into."""

from __future__ import annotations

import configparser
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from appliance import cli

REPO = Path(__file__).resolve().parents[2]


def test_version_is_the_package_metadata(monkeypatch, capsys):
    monkeypatch.setattr(cli.metadata, "version", lambda name: "9.8.7" if name == "ddc-appliance"
                        else metadata.version(name))
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "ddc 9.8.7"


def test_installed_version_matches_pyproject():
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "--version"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"ddc {declared}"


@pytest.mark.parametrize("command", [["run", "--config"], ["check-config"], ["status", "-c"]])
def test_config_error_exits_ex_config(tmp_path, command, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('role = "sideways"\n')
    assert cli.main([*command, str(bad)]) == cli.EX_CONFIG == 78
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(bad) in err


def test_unit_does_not_restart_into_a_config_error():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(REPO / "ansible/roles/ddc/files/etc/systemd/system/ddc@.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert str(cli.EX_CONFIG) in service["RestartPreventExitStatus"].split()


def test_a_daemon_collects_young_objects_less_often_and_never_walks_its_start_again():
    """`ddc run` tunes the cyclic collector once its node is built (docs/performance.md):
    young collections every COLLECT_YOUNG_AFTER allocations, the older thresholds kept,
    and what the start made frozen out of every later collection."""
    import gc

    before = gc.get_threshold()
    try:
        cli.tune_collector()
        assert gc.get_threshold() == (cli.COLLECT_YOUNG_AFTER, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

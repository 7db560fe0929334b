"""The vector role's log directory: owned by Vector whatever the order of installation, and
aged out by systemd-tmpfiles (the molecule scenario runs systemd-tmpfiles --clean on it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from .render import ROLE_DIR, render, role_variables

TASKS = yaml.safe_load((ROLE_DIR / "tasks" / "main.yml").read_text())


def _task(module: str, **match) -> tuple[int, dict]:
    for index, task in enumerate(TASKS):
        args = task.get(module) or task.get(module.rsplit(".", 1)[-1])
        if isinstance(args, dict) and all(args.get(k) == v for k, v in match.items()):
            return index, args
    raise AssertionError(f"no {module} task with {match}")


def test_log_files_age_out_by_tmpfiles():
    _, args = _task("ansible.builtin.template", dest="/etc/tmpfiles.d/ddc-logs.conf")
    text = render(template=ROLE_DIR / "templates" / args["src"])
    lines = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, lines
    kind, path, mode, user, group, age = lines[0]
    variables = role_variables()
    _, logdir = _task("ansible.builtin.file", path="{{ vector_log_dir }}")
    assert (kind, path) == ("d", variables["vector_log_dir"])
    # The same directory the role makes, so a boot never takes it away from Vector.
    assert (mode, user, group) == (logdir["mode"], logdir["owner"], logdir["group"])
    # By modification time only: otherwise reading a log file (atime) keeps it forever.
    assert age == f"m:{variables['vector_log_max_age']}"
    assert "validate" in args, "systemd-tmpfiles checks the line before it is installed"


def test_log_directory_belongs_to_vector_also_before_vector_is_installed():
    user_at, user = _task("ansible.builtin.user", name="vector")
    dir_at, logdir = _task("ansible.builtin.file", path="{{ vector_log_dir }}")
    assert user_at < dir_at
    assert (logdir["owner"], logdir["group"]) == ("vector", "vector")
    # As the Vector package's preinst would make it (distribution/debian/scripts/preinst):
    # a system user with its own group and /var/lib/vector as home, kept by the package.
    assert user["system"] is True and user["group"] == "vector"
    assert user["home"] == "{{ vector_data_dir }}"
    assert role_variables()["vector_data_dir"] == "/var/lib/vector"
    assert Path(user["shell"]).name == "nologin"

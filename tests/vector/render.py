"""Render the vector role's pipeline template the way the role's template task does.

The role (ansible/roles/vector) renders templates/etc/vector/vector.yaml.j2 with Ansible's
template module: Jinja2 with trim_blocks on, lstrip_blocks off, trailing newlines kept, and
the role's defaults (defaults/main.yml, vars/main.yml) as variables. The template uses no
Ansible-only filter, so plain Jinja2 with those settings renders the same text; the molecule
scenarios check the file Ansible itself wrote.

`python -m tests.vector.render` rewrites vector/vector.yaml: the template rendered for a
checkout (VRL programs read from the role's files/, relative to the repository root), the
file `vector test vector/vector.yaml vector/tests/*.yaml` runs on.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE_DIR = REPO / "ansible" / "roles" / "vector"
TEMPLATE = ROLE_DIR / "templates" / "etc" / "vector" / "vector.yaml.j2"
VRL_DIR = ROLE_DIR / "files" / "etc" / "vector"
CHECKOUT_CONFIG = REPO / "vector" / "vector.yaml"

# What differs in the checkout rendering: where the VRL programs are (relative to the
# repository root, where `vector test` is run) and the header.
CHECKOUT_VARS = {
    "vector_config_dir": str(VRL_DIR.relative_to(REPO)),
    "ansible_managed": (
        "Generated from ansible/roles/vector/templates/etc/vector/vector.yaml.j2 by\n"
        "# `python -m tests.vector.render`: edit the template, not this file. It is the DDC\n"
        "# pipeline as the vector role installs it, with the VRL programs read from the role's\n"
        "# files/ (run Vector from the repository root):\n"
        "#   vector test vector/vector.yaml vector/tests/*.yaml"
    ),
}


def role_variables() -> dict[str, Any]:
    """The role's defaults and vars, with Ansible's default ansible_managed."""
    variables: dict[str, Any] = {"ansible_managed": "Ansible managed"}
    for name in ("defaults", "vars"):
        variables.update(yaml.safe_load((ROLE_DIR / name / "main.yml").read_text()) or {})
    return variables


def render(overrides: Mapping[str, Any] | None = None, template: Path = TEMPLATE) -> str:
    """A template of the role (vector.yaml by default) as the role writes it for the role's
    defaults plus `overrides`."""
    env = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    variables = {**role_variables(), **(overrides or {})}
    return env.from_string(template.read_text(encoding="utf-8")).render(variables)


def render_checkout() -> str:
    return render(CHECKOUT_VARS)


def main() -> int:
    CHECKOUT_CONFIG.write_text(render_checkout(), encoding="utf-8")
    print(f"wrote {CHECKOUT_CONFIG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Render the vector role's pipeline template the way the role's template task does
(tests/roles.py); the molecule scenarios check the file Ansible itself wrote.

`python -m tests.vector.render` rewrites vector/vector.yaml: the template rendered for a
checkout (VRL programs read from the role's files/, relative to the repository root), the
file `vector test vector/vector.yaml vector/tests/*.yaml` runs on.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import roles

REPO = roles.REPO
ROLE_DIR = roles.ROLES / "vector"
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
    """The vector role's defaults and vars, with Ansible's default ansible_managed."""
    return roles.role_variables("vector")


def render(overrides: Mapping[str, Any] | None = None, template: Path = TEMPLATE) -> str:
    """A template of the role (vector.yaml by default) as the role writes it for the role's
    defaults plus `overrides`."""
    return roles.render("vector", str(template.relative_to(ROLE_DIR / "templates")), overrides)


def render_checkout() -> str:
    return render(CHECKOUT_VARS)


def main() -> int:
    CHECKOUT_CONFIG.write_text(render_checkout(), encoding="utf-8")
    print(f"wrote {CHECKOUT_CONFIG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

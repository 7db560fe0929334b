"""Render the Ansible roles' templates the way their template tasks do, for tests.

Ansible's template module is Jinja2 with trim_blocks on, lstrip_blocks off and trailing
newlines kept, with the role's defaults and vars (and ansible_managed) as variables. The
roles' templates use Jinja2 itself plus two Ansible filters, to_json and combine, which
are supplied here with Ansible's meaning; the molecule scenarios check what Ansible itself
writes on a host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "ansible" / "roles"


def _combine(*dicts: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        out.update(d)
    return out


ENV = jinja2.Environment(
    trim_blocks=True,
    lstrip_blocks=False,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
    autoescape=False,
)
ENV.filters["to_json"] = lambda value: json.dumps(value)
ENV.filters["combine"] = _combine


def role_variables(role: str) -> dict[str, Any]:
    """A role's defaults and vars, with Ansible's default ansible_managed."""
    variables: dict[str, Any] = {"ansible_managed": "Ansible managed",
                                 "inventory_hostname": "ddc-test-host"}
    for name in ("defaults", "vars"):
        path = ROLES / role / name / "main.yml"
        if path.is_file():
            variables.update(yaml.safe_load(path.read_text()) or {})
    return variables


def render_text(text: str, variables: Mapping[str, Any]) -> str:
    return ENV.from_string(text).render(variables)


def render(role: str, template: str, overrides: Mapping[str, Any] | None = None) -> str:
    """templates/<template> of a role for its defaults plus `overrides`."""
    text = (ROLES / role / "templates" / template).read_text(encoding="utf-8")
    return render_text(text, {**role_variables(role), **(overrides or {})})

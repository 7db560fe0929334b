"""Every `vector test` / `vector validate` command written in the repository loads only
Vector configuration files when run from the repository root, as documented.

A shell glob such as vector/*.yaml takes every YAML file in the directory; one that is not
Vector configuration (a metric catalogue, say) makes Vector fail with `unknown field`.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from .support import REPO, load_yaml_file

# Top-level keys of a Vector configuration file (Vector rejects any other: the root
# ConfigBuilder denies unknown fields).
VECTOR_TOP_LEVEL = {
    "acknowledgements", "api", "data_dir", "enrichment_tables", "expire_metrics_secs",
    "expire_metrics_per_metric_set", "healthchecks", "log_schema", "provider", "proxy",
    "schema", "secret", "sinks", "sources", "telemetry", "tests", "timezone", "transforms",
    "wildcard_matching",
}
COMMAND_RE = re.compile(r"\bvector (test|validate)((?: +[^\s`'\";|&)]+)+)")


def _documented_commands() -> list[tuple[str, str, list[str]]]:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    found = []
    for name in files:
        path = REPO / name
        if not name or not path.is_file() or path.suffix in {".png", ".gz", ".whl"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for m in COMMAND_RE.finditer(line):
                args = [a for a in m.group(2).split() if not a.startswith("-")]
                paths = [a for a in args if a.endswith((".yaml", ".yml", ".toml", ".json"))]
                if paths:
                    found.append((f"{name}:{lineno}", m.group(1), paths))
    return found


COMMANDS = _documented_commands()


def test_the_documented_commands_are_found():
    assert any(cmd == "test" for _, cmd, _ in COMMANDS), "no `vector test` command documented"


@pytest.mark.parametrize(("where", "cmd", "patterns"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_documented_command_loads_only_vector_config(where, cmd, patterns):
    for pattern in patterns:
        matches = sorted(REPO.glob(pattern))
        assert matches, f"{where}: {pattern} matches nothing from the repository root"
        for path in matches:
            unknown = set(load_yaml_file(path)) - VECTOR_TOP_LEVEL
            assert not unknown, (
                f"{where}: vector {cmd} would load {path.relative_to(REPO)}, which is not "
                f"Vector configuration (unknown field {sorted(unknown)[0]})"
            )


def test_the_role_validates_with_the_vrl_compiled():
    # `vector validate --no-environment` builds no component before Vector 0.57
    # (vectordotdev/vector#25161 added VRL compilation to it), so a missing or broken .vrl
    # would pass; the role must validate without it, in every place it validates.
    role = REPO / "ansible" / "roles" / "vector"
    texts = {p.relative_to(REPO): p.read_text() for p in sorted(role.rglob("*.yml"))}
    validating = {where: t for where, t in texts.items() if "validate" in t and "vector" in t}
    assert any("vector_validate_argv" in t for t in validating.values())
    for where, text in validating.items():
        assert "--no-environment" not in text, f"{where}: validates with --no-environment"

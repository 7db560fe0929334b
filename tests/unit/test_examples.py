"""The documented example configs stay valid as the schema moves."""

from pathlib import Path

import pytest

from appliance.config import load

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    cfg = load(path, check_files=False)  # key files live on the real hosts
    assert cfg.role == path.stem
    assert {c.type for c in cfg.channels} == {"udp", "kafka"}

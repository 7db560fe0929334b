"""The demo's progress bar is rich's (a dependency already), and stays out of the way when
quiet; the install chatter of pip/setuptools does not reach a new user."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

from rich.console import Console

from appliance.tools.demo_common import DemoProgress

REPO = Path(__file__).resolve().parents[2]


def test_progress_is_a_rich_bar():
    out = io.StringIO()
    progress = DemoProgress(out, quiet=False,
                            console=Console(file=out, force_terminal=True, width=80))
    progress.show("sending", 50, 100)
    progress.show("arriving", 100, 100)
    progress.close()
    text = out.getvalue()
    assert "sending" in text and "arriving" in text and "100/100" in text
    assert "━" in text  # rich's bar, not a hand-drawn one


def test_quiet_progress_prints_nothing():
    out = io.StringIO()
    progress = DemoProgress(out, quiet=True)
    progress.show("sending", 1, 2)
    progress.close()
    assert out.getvalue() == ""


def test_no_setuptools_deprecation_and_no_pip_chatter_on_success():
    # setuptools >= 77 warns about a `license = { text = ... }` table on every build.
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert isinstance(project["project"]["license"], str)
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert '>"$log" 2>&1' in demo and 'cat "$log"' in demo, "pip output only on failure"

"""Replay Vector's own unit tests (vector/tests/*.yaml) without Vector.

An operator with Vector runs them with
    vector test vector/vector.yaml vector/tests/*.yaml
Here each test's input event goes through the remap/filter transforms on its way to the
`extract_from` component, run by Vector's VRL compiler and runtime (vrl-python), and each
condition is evaluated on the result. The remap program and the condition run as one VRL
program so that values keep their VRL types (timestamps stay timestamps).

Only `remap` and `filter` transforms in a linear chain are modelled; a test that needs more
fails here loudly rather than passing untested.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from .support import (
    MAIN_CONFIG,
    VECTOR_DIR,
    VrlProgram,
    condition_source,
    load_vector_config,
    load_yaml_file,
    vrl_source_of,
)

TEST_FILES = sorted((VECTOR_DIR / "tests").glob("*.yaml"))


def _load_tests() -> list[tuple[str, dict]]:
    cases = []
    for path in TEST_FILES:
        for test in load_yaml_file(path)["tests"]:
            cases.append((f"{path.stem}: {test['name']}", test))
    return cases


CASES = _load_tests()


@pytest.fixture(scope="module")
def config() -> dict:
    return load_vector_config([MAIN_CONFIG])


def _chain(config: dict, start: str, end: str) -> list[str]:
    """Transforms from `start` to `end` inclusive, following `inputs` backwards."""
    path = [end]
    while path[-1] != start:
        inputs = [i for i in config["transforms"][path[-1]]["inputs"] if i in config["transforms"]]
        assert len(inputs) <= 1, f"{path[-1]}: fan-in of transforms is not modelled"
        assert inputs, f"{end} is not downstream of {start}"
        path.append(inputs[0])
    return list(reversed(path))


def _step_source(config: dict, cid: str) -> tuple[str, str]:
    """('remap', program) or ('filter', condition) for one transform."""
    comp = config["transforms"][cid]
    if comp["type"] == "remap":
        return "remap", vrl_source_of(comp)
    if comp["type"] == "filter":
        return "filter", condition_source(comp["condition"])
    raise AssertionError(f"{cid}: transform type {comp['type']} is not modelled")


def _input_event(inp: Mapping[str, Any]) -> dict[str, Any]:
    if inp["type"] == "log":
        return dict(inp["log_fields"])
    if inp["type"] == "metric":
        metric = inp["metric"]
        event = {"name": metric["name"], "kind": metric["kind"]}
        for key in ("namespace", "tags", "timestamp"):
            if key in metric:
                event[key] = metric[key]
        mtypes = [k for k in ("counter", "gauge", "set", "distribution") if k in metric]
        assert len(mtypes) == 1, metric
        event["type"] = mtypes[0]
        return event
    raise AssertionError(f"input type {inp['type']} is not modelled")


def _run(config: dict, event: dict, start: str, end: str, tail: str) -> tuple[bool, Any]:
    """Run the chain start..end on `event`, then `tail` (a condition).

    Returns (reached_end, value_of_tail). Filters before `end` that reject the event make
    reached_end False; `end` itself, when a filter, is applied too.
    """
    program = []
    for cid in _chain(config, start, end):
        kind, src = _step_source(config, cid)
        if kind == "remap":
            program.append(src)
        else:
            passes = VrlProgram("\n".join([*program, src]), name=cid).result(event)
            assert isinstance(passes, bool), f"{cid}: condition is not boolean"
            if not passes:
                return False, None
    value = VrlProgram("\n".join([*program, tail]), name=f"{end} + condition").result(event)
    return True, value


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[n for n, _ in CASES])
def test_vector_unit_test(config, case):
    for inp in case["inputs"]:
        event = _input_event(inp)
        start = inp["insert_at"]
        for out in case.get("outputs", []):
            for cond in out["conditions"]:
                reached, value = _run(
                    config, event, start, out["extract_from"], condition_source(cond)
                )
                assert reached, f"no event came out of {out['extract_from']}"
                assert value is True, f"condition returned {value!r}"
        for cid in case.get("no_outputs_from", []):
            reached, _ = _run(config, event, start, cid, "true")
            assert not reached, f"{cid} let the event through"


def test_there_are_vector_unit_tests():
    names = {Path(p).name for p in TEST_FILES}
    assert {"logs.yaml", "metrics.yaml", "forwarded.yaml"} <= names
    assert len(CASES) >= 10

"""What the tests of deploy/ (the Helm chart, the container image) share: the pinned Helm,
rendering the chart into objects, and the paths."""

from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "ddc"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
INSTALL_HELM = REPO / "scripts" / "ci" / "install-helm.sh"


@functools.cache
def helm_binary() -> str:
    """The pinned Helm (scripts/ci/install-helm.sh: a cache hit in a few ms, else a build)."""
    out = subprocess.run([str(INSTALL_HELM)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{INSTALL_HELM} failed:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    # Helm says on stderr that it follows files/vector (a link to the repository's vector/).
    out.stderr = "\n".join(ln for ln in out.stderr.splitlines()
                           if "found symbolic link in path" not in ln)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stderr}")
    return out


def value_args(values: dict[str, Any] | None, files: list[Path] = (), tmp: Path | None = None,
               sets: list[str] = ()) -> list[str]:
    args: list[str] = []
    for f in files:
        args += ["-f", str(f)]
    if values:
        assert tmp is not None
        path = tmp / f"values-{len(list(tmp.glob('values-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    for s in sets:
        args += ["--set", s]
    return args


def render(release: str = "ddc-test", *args: str) -> list[dict[str, Any]]:
    """`helm template RELEASE deploy/helm/ddc ARGS...` as a list of objects (a fresh copy:
    tests may change it)."""
    return copy.deepcopy(_render(release, *args))


@functools.cache
def _render(release: str, *args: str) -> list[dict[str, Any]]:
    # Cached: many tests read the same rendering (values files are written once per test,
    # so only argument lists without temporary files repeat).
    out = helm("template", release, str(CHART), *args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(objects: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]
    names = [o["metadata"]["name"] for o in hits]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {names}"
    return hits[0]


def pod_spec(objects: list[dict]) -> dict:
    return find(objects, "Deployment")["spec"]["template"]["spec"]


def container(spec: dict, name: str, init: bool = False) -> dict:
    group = spec["initContainers" if init else "containers"]
    hits = [c for c in group if c["name"] == name]
    names = [c["name"] for c in group]
    assert len(hits) == 1, f"no {'init ' if init else ''}container {name}: {names}"
    return hits[0]


def volume_at(spec: dict, container_name: str, mount_path: str) -> tuple[dict, dict]:
    """(the volume, the mount) a container has at mount_path."""
    mount = next(m for m in container(spec, container_name)["volumeMounts"]
                 if m["mountPath"] == mount_path)
    return next(v for v in spec["volumes"] if v["name"] == mount["name"]), mount


def node_config_text(objects: list[dict]) -> str:
    """The ddc.toml the chart rendered (the ConfigMap the ddc container mounts)."""
    volume, _ = volume_at(pod_spec(objects), "ddc", "/etc/ddc")
    return find(objects, "ConfigMap", volume["configMap"]["name"])["data"]["ddc.toml"]

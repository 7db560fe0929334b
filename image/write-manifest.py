"""Write ddc-VARIANT-ARCH.manifest.json: what an image holds and what it was built from.

Called by image/build.sh (write_manifest) with the build's inputs as options. It was a
heredoc there, with the shell's values pasted into Python string literals (a value with
a quote in it broke the script, and neither shellcheck nor ruff read it); here it is
plain Python the linters check, and the values arrive as arguments. The output is the
same key for key (docs/image.md lists what the manifest records).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os


def tsv(path: str) -> dict[str, str]:
    """name<TAB>version lines (dpkg-query, pip in the venv)."""
    with open(path) as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)


def pairs(path: str, conv) -> dict:
    """'key value' lines (the sizes and timings build.sh kept in shell arrays)."""
    with open(path) as f:
        return {k: conv(v) for k, v in (line.split() for line in f if line.strip())}


def sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("output")
    for opt in ("name", "variant", "arch", "work", "here", "wheelhouse", "source-date-epoch",
                "git-commit", "git-dirty", "suite", "snapshot", "variant-packages",
                "base-tar", "base-cached", "root-uuid", "boot-volid", "sizes", "timings"):
        p.add_argument(f"--{opt}", required=True)
    # One per sources.list line, in order.
    p.add_argument("--debian-source", action="append", default=[])
    a = p.parse_args()
    work = a.work
    wheels = {w: sha(os.path.join(a.wheelhouse, w)) for w in sorted(os.listdir(a.wheelhouse))}
    lists = {f"{n}.list": sha(os.path.join(a.here, "packages", f"{n}.list"))
             for n in ("common", a.variant)}
    epoch_file = f"{a.base_tar}.epoch"
    manifest = {
        "image": f"{a.name}.img.xz",
        "variant": a.variant,
        "architecture": a.arch,
        "appliance_version": read(os.path.join(work, "appliance-version")),
        "kernel": read(os.path.join(work, "kernel-version")),
        "source_date_epoch": int(a.source_date_epoch),
        "inputs": {
            "repository_commit": a.git_commit,
            "repository_uncommitted_changes": int(a.git_dirty),
            "debian_suite": a.suite,
            "debian_sources": a.debian_source,
            "debian_snapshot": a.snapshot or None,
            "package_lists_sha256": lists,
            "variant_packages": a.variant_packages.split(),
            "base_tarball": os.path.basename(a.base_tar),
            "base_tarball_cached": a.base_cached == "true",
            "base_source_date_epoch": int(read(epoch_file)) if os.path.exists(epoch_file)
            else None,
            "wheelhouse_sha256": wheels,
            "ansible_extra_vars": os.environ.get("DDC_ANSIBLE_EXTRA_VARS") or None,
            "build_host": os.uname().nodename,
        },
        "identifiers": {
            "root_fs_uuid": a.root_uuid,
            "boot_fs_volume_id": a.boot_volid,
        },
        "sizes": pairs(a.sizes, int),
        "timings_seconds": pairs(a.timings, float),
        "python_packages": tsv(os.path.join(work, "venv.tsv")),
        "debian_packages": tsv(os.path.join(work, "dpkg.tsv")),
    }
    with open(a.output, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main()

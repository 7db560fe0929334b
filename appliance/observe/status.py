"""The node's status file: a JSON snapshot rewritten atomically every metrics interval,
read by `ddc status` (so the status view needs neither Vector nor the network)."""

from __future__ import annotations

import json
import os
import tempfile


def write_status(path: str, status: dict) -> None:
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".status.", dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(status, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or missing runtime dir must not stop the data path


def read_status(path: str) -> dict:
    with open(path) as f:
        return json.load(f)

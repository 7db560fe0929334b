"""Small durable state under state_dir, each file written atomically (write, fsync, rename).

    session.json    ingress: the epoch of its last session, so the next one is later
                    even if the clock went back (Raspberry Pis have no RTC);
                    egress: the session it accepted last, so after a restart it takes
                    that session up again and refuses replays of older ones.
    positions.json  egress: per (channel, topic, partition) the offset up to which a
                    durable sink confirmed delivery (no duplicates after restarts).
"""

from __future__ import annotations

import json
import os
import time

SESSION_FILE = "session.json"
POSITIONS_FILE = "positions.json"


def _write(state_dir: str, name: str, data: dict) -> None:
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(state_dir: str, name: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def load_session_epoch(state_dir: str) -> int:
    data = _read(state_dir, SESSION_FILE)
    return int(data["epoch"]) if data else 0


def save_session_epoch(state_dir: str, epoch: int) -> None:
    _write(state_dir, SESSION_FILE, {"epoch": epoch})


def load_last_session(state_dir: str) -> int:
    data = _read(state_dir, SESSION_FILE)
    return int(data["session"]) if data else 0


def save_last_session(state_dir: str, session_id: int) -> None:
    _write(state_dir, SESSION_FILE, {"session": session_id})


def next_session_epoch(state_dir: str) -> int:
    """Ingress: an epoch later than every earlier session of this node, in ms."""
    epoch = max(int(time.time() * 1000), load_session_epoch(state_dir) + 1)
    save_session_epoch(state_dir, epoch)
    return epoch


def load_positions(state_dir: str) -> dict:
    """{(channel id, topic, partition): last confirmed offset}."""
    data = _read(state_dir, POSITIONS_FILE)
    if not data:
        return {}
    return {(int(c), t, int(p)): int(o) for c, t, p, o in data["streams"]}


def save_positions(state_dir: str, positions: dict) -> None:
    _write(state_dir, POSITIONS_FILE,
           {"streams": [[c, t, p, o] for (c, t, p), o in sorted(positions.items())]})

"""Small durable state under state_dir (formats: docs/protocol.md, "State files").

    session.json          ingress: the epoch of its last session, so the next one is later
                          even if the clock went back (Raspberry Pis have no RTC).
                          egress: the session frontier (session.Checkpoint) it persists
                          ahead of every delivery, what the sinks had confirmed when it was
                          written, and the epoch floor below which sessions are refused.
    positions.json        egress: per (channel, topic, partition) the offset up to which a
                          durable sink confirmed delivery (no duplicates after restarts).
    accept-session.json   egress, written by `ddc accept-session`: one older session the
                          operator vouches for (an ingress that lost its state, clock behind).

Every write is a temporary file, fsync, rename over the old one, fsync of the directory:
after a power cut the file is the old one or the new one, never a mix. A file that does
not parse is moved aside (name.corrupt-<time>) with one log line naming it and what the
daemon does instead: a corrupt file never keeps a daemon from starting.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .protocol.auth import session_epoch
from .protocol.loss import StreamPosition
from .protocol.session import Checkpoint

SESSION_FILE = "session.json"
POSITIONS_FILE = "positions.json"
ACCEPT_FILE = "accept-session.json"
FORMAT = 2  # of session.json; 1 (or no "format") is the protocol v1 layout
V1_EPOCH_SHIFT = 16  # a v1 session id was a 48-bit epoch and 16 random bits

T = TypeVar("T")
Log = Callable[..., None]


class StateError(ValueError):
    """A state file that parses as JSON but does not hold what it should."""


def write_json(state_dir: str, name: str, data: dict) -> None:
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, name)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(data, separators=(",", ":")).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def read_json(state_dir: str, name: str, parse: Callable[[Any], T], log: Log,
              instead: str) -> T | None:
    """parse(the file's JSON), None if the file is missing. A file that cannot be read or
    parsed is moved aside and logged (naming it and `instead`: what the daemon does)."""
    path = os.path.join(state_dir, name)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if not os.path.isdir(path):
            log("error", "state_file_unreadable",
                f"cannot read state file {path}: {exc.strerror}; {instead}", path=path)
            return None
        problem = "it is a directory"
    else:
        try:
            return parse(json.loads(raw))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            problem = str(exc) or type(exc).__name__
    aside = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        os.replace(path, aside)
        moved = f"moved to {aside}"
    except OSError as exc:
        aside, moved = "", f"could not move it aside ({exc.strerror})"
    log("error", "state_file_corrupt",
        f"state file {path} is corrupt ({problem}); {moved}; {instead}",
        path=path, moved_to=aside or None, problem=problem)
    return None


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise StateError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what, minimum=-1)


def _dict(data: Any) -> dict:
    if not isinstance(data, dict):
        raise StateError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _session_hex(value: Any, what: str) -> int:
    if not isinstance(value, str):
        raise StateError(f"{what} must be a hexadecimal session id, got {value!r}")
    return int(value, 16)


# -- ingress: the session epoch ----------------------------------------------------------
def _parse_epoch(data: Any) -> int:
    return _int(_dict(data)["epoch"], "epoch")


def next_session_epoch(state_dir: str, log: Log) -> int:
    """Ingress: an epoch later than every earlier session of this node, in ms."""
    saved = read_json(state_dir, SESSION_FILE, _parse_epoch, log,
                      "the new session's epoch comes from the clock alone; if the clock is "
                      "behind, the egress refuses the session and names it "
                      "(re-pair with `ddc accept-session` there, docs/protocol.md)")
    epoch = max(int(time.time() * 1000), (saved or 0) + 1)
    write_json(state_dir, SESSION_FILE, {"format": FORMAT, "epoch": epoch})
    return epoch


# -- egress: the session frontier -------------------------------------------------------------
Delivered = dict[tuple[int, str, int], tuple[int | None, int | None, int]]
# stream -> (session id the confirmation is from, its stream sequence there, offset)


class EgressSession:
    """What the egress reads back from session.json."""

    def __init__(self, floor_epoch: int, checkpoint: Checkpoint | None, delivered: Delivered):
        self.floor_epoch = floor_epoch
        self.checkpoint = checkpoint
        self.delivered = delivered


def encode_checkpoint(cp: Checkpoint) -> dict:
    return {"session": f"{cp.session_id:032x}", "key_id": cp.key_id,
            "block_frontier": cp.block_frontier, "heartbeat_floor": cp.heartbeat_floor,
            "heartbeat_sent_at": cp.heartbeat_sent_at, "sessions": cp.sessions,
            "streams": [[p.channel_id, p.topic, p.partition, p.durable, p.stream_seq,
                         p.last_offset, p.last_seen_offset] for p in cp.streams]}


def decode_checkpoint(d: Any) -> Checkpoint:
    d = _dict(d)
    streams = []
    for c, t, p, durable, seq, last, seen in d["streams"]:
        if not isinstance(t, str) or not isinstance(durable, bool):
            raise StateError(f"stream entry {[c, t, p]} is malformed")
        streams.append(StreamPosition(_int(c, "channel"), t, _int(p, "partition"), durable,
                                      _int(seq, "stream_seq"), _opt_int(last, "last_offset"),
                                      _opt_int(seen, "last_seen_offset")))
    return Checkpoint(_session_hex(d["session"], "session"), _int(d["key_id"], "key_id"),
                      _int(d["block_frontier"], "block_frontier"),
                      _int(d["heartbeat_floor"], "heartbeat_floor", minimum=-1),
                      _opt_int(d["heartbeat_sent_at"], "heartbeat_sent_at"),
                      _int(d["sessions"], "sessions"), tuple(streams))


def _parse_egress_session(data: Any) -> EgressSession:
    data = _dict(data)
    if data.get("format", 1) == 1:  # protocol v1: only the last session's id
        return EgressSession(_int(data["session"], "session") >> V1_EPOCH_SHIFT, None, {})
    if data["format"] != FORMAT:
        raise StateError(f"format {data['format']!r} is not {FORMAT}")
    cp = None if data["checkpoint"] is None else decode_checkpoint(data["checkpoint"])
    delivered: Delivered = {}
    for c, t, p, sid, seq, offset in data["delivered"]:
        delivered[(_int(c, "channel"), str(t), _int(p, "partition"))] = (
            None if sid is None else _session_hex(sid, "session"), _opt_int(seq, "seq"),
            _int(offset, "offset", minimum=-1))
    floor = _int(data["floor_epoch"], "floor_epoch")
    if cp is not None:
        floor = max(floor, session_epoch(cp.session_id))
    return EgressSession(floor, cp, delivered)


def load_egress_session(state_dir: str, log: Log) -> EgressSession | None:
    """None: no usable file (first start, or it was wiped or corrupt)."""
    return read_json(state_dir, SESSION_FILE, _parse_egress_session, log,
                     "starting without a session frontier: the next authentic session is "
                     "taken up, and what may have been delivered before is reported in doubt")


def save_egress_session(state_dir: str, floor_epoch: int, cp: Checkpoint | None,
                        delivered: Delivered) -> None:
    write_json(state_dir, SESSION_FILE, {
        "format": FORMAT, "floor_epoch": floor_epoch,
        "checkpoint": None if cp is None else encode_checkpoint(cp),
        "delivered": [[c, t, p, None if sid is None else f"{sid:032x}", seq, offset]
                      for (c, t, p), (sid, seq, offset) in sorted(delivered.items())]})


# -- egress: an older session the operator accepts ----------------------------------------------
def _parse_accept(data: Any) -> int:
    return _session_hex(_dict(data)["session"], "session")


def load_accepted_session(state_dir: str, log: Log) -> int | None:
    return read_json(state_dir, ACCEPT_FILE, _parse_accept, log,
                     "no older session is accepted; run `ddc accept-session` again")


def save_accepted_session(state_dir: str, session_id: int) -> None:
    write_json(state_dir, ACCEPT_FILE, {"session": f"{session_id:032x}"})


def clear_accepted_session(state_dir: str) -> None:
    try:
        os.remove(os.path.join(state_dir, ACCEPT_FILE))
    except FileNotFoundError:
        pass


# -- egress: durable positions -----------------------------------------------------------------
def _parse_positions(data: Any) -> dict:
    return {(_int(c, "channel"), str(t), _int(p, "partition")): _int(o, "offset", minimum=-1)
            for c, t, p, o in _dict(data)["streams"]}


def load_positions(state_dir: str, log: Log) -> dict:
    """{(channel id, topic, partition): last confirmed offset}."""
    return read_json(state_dir, POSITIONS_FILE, _parse_positions, log,
                     "starting with no delivered positions: the resume point of every "
                     "durable stream is reported as unknown") or {}


def save_positions(state_dir: str, positions: dict) -> None:
    write_json(state_dir, POSITIONS_FILE,
               {"streams": [[c, t, p, o] for (c, t, p), o in sorted(positions.items())]})

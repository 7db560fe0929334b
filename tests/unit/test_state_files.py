"""State files (issue 12 items 2 and 6): merged positions, durable writes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from appliance import state
from appliance.config import load
from appliance.egress import EgressNode

from ..integration.daemons import free_udp_port, node_config, write_key


@pytest.fixture
def egress_cfg(tmp_path):
    key = write_key(tmp_path / "link.key")
    path = node_config("egress", tmp_path, key, f'bind = "127.0.0.1:{free_udp_port()}"',
                       "null", "")
    return load(path)


def test_positions_of_idle_partitions_are_merged_never_replaced(egress_cfg):
    """{p0: 1000, p1: 2000} on disk, the sink confirms p0 up to 1005: p1 must stay, or an
    ingress re-sending p1 from its committed offset duplicates it after the next restart."""
    os.makedirs(egress_cfg.state_dir, exist_ok=True)
    with open(os.path.join(egress_cfg.state_dir, "positions.json"), "w") as f:
        json.dump({"streams": [[1, "orders", 0, 1000], [1, "orders", 1, 2000]]}, f)
    node = EgressNode(egress_cfg)
    try:
        node.sinks[1].delivered_positions = lambda: {("orders", 0): 1005}
        node.persist_positions()
    finally:
        node.receiver.close()
    with open(os.path.join(egress_cfg.state_dir, "positions.json")) as f:
        streams = json.load(f)["streams"]
    assert sorted(map(tuple, streams)) == [(1, "orders", 0, 1005), (1, "orders", 1, 2000)]


def test_a_write_is_fsynced_renamed_and_its_directory_fsynced(tmp_path, monkeypatch):
    """temp file, fsync, rename, fsync(dir): after a power cut the file is old or new."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(
        "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b)))
    state.save_positions(str(tmp_path), {(1, "t", 0): 5})
    assert calls == ["fsync-file", "rename", "fsync-dir"]
    assert sorted(os.listdir(tmp_path)) == ["positions.json"]  # no temporary left behind


@pytest.mark.parametrize("content", [b'{"streams": [[1, "t", 0, 5]', b"", b"\xff\xfe",
                                     b'{"streams": [[1, "t"]]}', b"[]", b'{"session": "x"}'])
def test_a_torn_or_corrupt_file_is_moved_aside_with_one_line(tmp_path, content):
    lines = []
    for name in ("positions.json", "session.json"):
        (tmp_path / name).write_bytes(content)
    log = lambda *a, **k: lines.append((a, k))  # noqa: E731
    assert state.load_positions(str(tmp_path), log) == {}
    assert state.load_egress_session(str(tmp_path), log) is None
    assert len(lines) == 2
    for (level, event, message), fields in lines:
        assert (level, event) == ("error", "state_file_corrupt")
        assert fields["path"] in message and fields["moved_to"] in message
        assert os.path.exists(fields["moved_to"]) and not os.path.exists(fields["path"])
    assert "resume point of every durable stream is reported as unknown" in lines[0][0][2]


def test_an_egress_session_file_round_trips(tmp_path):
    from appliance.protocol.loss import StreamPosition
    from appliance.protocol.session import Checkpoint

    cp = Checkpoint(0xAB << 64 | 7, 3, 42, 17, 1_700_000_000_000, 2,
                    (StreamPosition(1, "t", 0, True, 9, 109, 109),
                     StreamPosition(2, "", 0, False, 4, None, 4)))
    delivered = {(1, "t", 0): (cp.session_id, 7, 107), (2, "", 0): (None, None, 3)}
    state.save_egress_session(str(tmp_path), 0xAB, cp, delivered)
    back = state.load_egress_session(str(tmp_path), lambda *a, **k: None)
    assert (back.floor_epoch, back.checkpoint, back.delivered) == (0xAB, cp, delivered)


def test_a_protocol_v1_egress_session_file_becomes_an_epoch_floor(tmp_path):
    """An upgrade keeps refusing sessions older than the last v1 one (48-bit epoch)."""
    (tmp_path / "session.json").write_text(json.dumps({"session": (1234 << 16) | 99}))
    back = state.load_egress_session(str(tmp_path), lambda *a, **k: None)
    assert (back.floor_epoch, back.checkpoint) == (1234, None)

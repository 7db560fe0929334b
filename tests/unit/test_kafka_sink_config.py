"""Kafka sink keys: check-config refuses what the sink could never honour, one line each."""

from __future__ import annotations

import pytest

from appliance import cli
from appliance.channels.kafka_positions import parse_position, position_key, position_value
from appliance.protocol.auth import format_key


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "link.key"
    path.write_text(format_key(bytes(range(32))))
    path.chmod(0o600)
    return path


def _egress(tmp_path, key_file, sink: str, link: str = "") -> str:
    path = tmp_path / "egress.toml"
    path.write_text(f'role = "egress"\n[link]\nbind = "0.0.0.0:7000"\nkey_file = "{key_file}"\n'
                    f'{link}\n[[channel]]\nid = 1\nname = "kafka"\ntype = "kafka"\n'
                    f'[channel.kafka]\nbootstrap_servers = "localhost:9092"\n{sink}\n')
    return str(path)


def _check(path: str, capsys) -> tuple[int, list[str]]:
    rc = cli.main(["check-config", "-q", path])
    return rc, capsys.readouterr().err.splitlines()


def test_sink_max_record_bytes_above_the_links_is_refused(tmp_path, key_file, capsys):
    path = _egress(tmp_path, key_file, "max_record_bytes = 2000000",
                   "max_record_bytes = 1048576")
    rc, lines = _check(path, capsys)
    assert rc == cli.EX_CONFIG and len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:")
    assert "channel[0].kafka.max_record_bytes: 2000000 is above link.max_record_bytes " \
           "(1048576)" in lines[0]
    # at or below the link's limit is fine
    rc, lines = _check(_egress(tmp_path, key_file, "max_record_bytes = 1048576",
                               "max_record_bytes = 1048576"), capsys)
    assert (rc, lines) == (0, [])


@pytest.mark.parametrize("sink, key, fragment", [
    ('transactions = "yes"', "transactions", "must be true or false"),
    ("delivery_timeout_ms = 1000000", "delivery_timeout_ms", "between 1000 and 900000"),
    ('positions_topic = "no spaces"', "positions_topic", "not a valid Kafka topic name"),
    ('transactional_id = ""', "transactional_id", "non-empty string"),
    ("commit_interval_ms = 0", "commit_interval_ms", "between 1 and 60000"),
])
def test_transaction_keys_are_checked(tmp_path, key_file, capsys, sink, key, fragment):
    rc, lines = _check(_egress(tmp_path, key_file, sink), capsys)
    assert rc == cli.EX_CONFIG and len(lines) == 1, lines
    assert f"channel[0].kafka.{key}: " in lines[0] and fragment in lines[0], lines[0]


def test_a_long_delivery_timeout_is_fine_without_transactions(tmp_path, key_file, capsys):
    path = _egress(tmp_path, key_file, "transactions = false\ndelivery_timeout_ms = 1000000")
    assert _check(path, capsys) == (0, [])


def test_position_records_round_trip_and_foreign_records_are_not_positions():
    key = position_key(3, "orders", 7)
    assert parse_position(key, position_value(41, "egress-b", "ddc-egress-b-kafka")) == \
        (3, "orders", 7, 41, "egress-b", [])
    pending = [(None, 12, None, "tail", 1_700_000_000.5), (20, 29, 10, "blocks lost", 3.0)]
    assert parse_position(key, position_value(41, "egress-b", "t", pending)) == \
        (3, "orders", 7, 41, "egress-b", pending)
    assert parse_position(key, None) == (3, "orders", 7, None, "", [])  # a tombstone
    assert parse_position(b"hello", b"{}") is None
    assert parse_position(key, b'{"offset": "x"}') is None
    assert parse_position(None, None) is None

"""Config validation: valid files load; every problem is one line "FILE:LINE: key: message"."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from appliance import cli
from appliance.config import Address, ConfigError, load, loads, parse_address
from appliance.protocol.auth import format_key

KEY = bytes(range(32))


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "link.key"
    path.write_text(format_key(KEY))
    path.chmod(0o600)
    return path


def ingress_text(key: Path, *, link_extra: str = "", top_extra: str = "",
                 channel: str | None = None, peer: str | None = '"192.0.2.2:7000"') -> str:
    peer_line = f"peer = {peer}\n" if peer is not None else ""
    if channel is None:
        channel = ('[[channel]]\nid = 1\nname = "syslog"\ntype = "udp"\n\n'
                   '[channel.udp]\nlisten = "127.0.0.1:5514"\n')
    return (f'role = "ingress"\nnode_name = "high-1"\nstate_dir = "/var/lib/ddc"\n{top_extra}\n'
            f'[link]\n{peer_line}key_file = "{key}"\n{link_extra}\n'
            f'{channel}')


def egress_text(key: Path, *, link_extra: str = "", channel: str | None = None) -> str:
    if channel is None:
        channel = ('[[channel]]\nid = 1\nname = "syslog"\ntype = "udp"\n\n'
                   '[channel.udp]\ntarget = "127.0.0.1:514"\n\n'
                   '[[channel]]\nid = 2\nname = "bench"\ntype = "null"\n')
    return (f'role = "egress"\n\n[link]\nbind = "0.0.0.0:7000"\nkey_file = "{key}"\n'
            f'{link_extra}\n{channel}')


def problems(text: str, path: str = "node.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads(text, path)
    assert str(info.value) == "\n".join(info.value.problems)
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line number of the nth line that starts with needle."""
    hits = [no for no, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith(needle)]
    assert len(hits) >= nth, f"{needle!r} not in the config"
    return hits[nth - 1]


def only_problem(text: str, key: str, line: int, fragment: str, path: str = "node.toml") -> str:
    found = problems(text, path)
    assert len(found) == 1, found
    msg = found[0]
    assert msg.startswith(f"{path}:{line}: {key}: "), msg
    assert fragment in msg, msg
    return msg


# -- valid files --------------------------------------------------------------------------
def test_valid_ingress(key_file, tmp_path):
    path = tmp_path / "ingress.toml"
    path.write_text(ingress_text(key_file, link_extra="mtu = 9000\nfec_redundancy_percent = 25\n"
                                 "interleave_depth = 8\nmode = \"authenticate\"\n"))
    cfg = load(path)
    assert cfg.role == "ingress" and cfg.node_name == "high-1"
    assert cfg.link.peer == Address("192.0.2.2", 7000)
    assert cfg.link.bind == Address("0.0.0.0", 0)
    assert (cfg.link.mtu, cfg.link.fec_redundancy, cfg.link.interleave_depth) == (9000, 0.25, 8)
    assert cfg.link.mode == "authenticate" and cfg.link.key_file == str(key_file)
    assert [(c.id, c.name, c.type) for c in cfg.channels] == [(1, "syslog", "udp")]
    assert cfg.channels[0].options == {"listen": "127.0.0.1:5514"}


def test_valid_egress(key_file, tmp_path):
    path = tmp_path / "egress.toml"
    path.write_text(egress_text(key_file, link_extra=(
        f'accept_keys = [{{ id = 2, file = "{key_file}" }}]\nreorder_window_blocks = 8\n'
        'interleave_depth = 4\nloss_timeout_ms = 100\n')))
    cfg = load(path)
    assert cfg.role == "egress" and cfg.link.peer is None
    assert cfg.link.bind == Address("0.0.0.0", 7000)
    assert cfg.link.accept_keys == {2: str(key_file)}
    assert cfg.link.loss_timeout == pytest.approx(0.1)
    assert [(c.id, c.type) for c in cfg.channels] == [(1, "udp"), (2, "null")]


def test_valid_ipv6_peer(key_file):
    cfg = loads(ingress_text(key_file, peer='"[fd00::2]:7000"'), "x.toml")
    assert cfg.link.peer == Address("fd00::2", 7000) and cfg.link.peer.ipv6
    assert str(cfg.link.peer) == "[fd00::2]:7000"


# -- one problem each ---------------------------------------------------------------
def test_missing_role(key_file):
    text = ingress_text(key_file).replace('role = "ingress"\n', "")
    # no line holds a missing top-level key: the message points at the start of the file
    only_problem(text, "role", 1, "is required")


def test_bad_role(key_file):
    text = ingress_text(key_file).replace('"ingress"', '"sideways"')
    only_problem(text, "role", 1, "must be \"ingress\" or \"egress\", got 'sideways'")


def test_unknown_top_level_key(key_file):
    text = ingress_text(key_file, top_extra="colour = \"blue\"\n")
    only_problem(text, "colour", line_of(text, "colour"), "unknown key (known: channel, link,")


@pytest.mark.parametrize("value, shown", [("100", "got 100"), ("9217", "got 9217"),
                                          ('"1500"', "got '1500'"), ("true", "got true"),
                                          ("1500.0", "got 1500.0")])
def test_mtu_out_of_range_or_wrong_type(key_file, value, shown):
    text = ingress_text(key_file, link_extra=f"mtu = {value}\n")
    only_problem(text, "link.mtu", line_of(text, "mtu ="),
                 f"must be an integer MTU between 576 and 9216, {shown}")


def test_queue_bytes_out_of_range(key_file):
    text = ingress_text(key_file, top_extra="[tuning]\nqueue_bytes = 1000\n")
    only_problem(text, "tuning.queue_bytes", line_of(text, "queue_bytes"),
                 "must be bytes between 1048576 (1 MiB) and 17179869184 (16 GiB), got 1000")


def test_queue_bytes_default_is_per_role(key_file, tmp_path):
    """The ingress's queue only stands in front of its link thread (32 MiB keeps it under
    200 MB with 8 KB records); the egress's absorbs a slow sink (64 MiB)."""
    (tmp_path / "in.toml").write_text(ingress_text(key_file))
    (tmp_path / "out.toml").write_text(egress_text(key_file))
    assert load(str(tmp_path / "in.toml")).tuning.queue_bytes == 32 * 1024 * 1024
    assert load(str(tmp_path / "out.toml")).tuning.queue_bytes == 64 * 1024 * 1024


def test_missing_peer_on_ingress(key_file):
    text = ingress_text(key_file, peer=None)
    only_problem(text, "link.peer", line_of(text, "[link]"), "is required")


def test_peer_on_egress(key_file):
    text = egress_text(key_file, link_extra='peer = "192.0.2.1:7000"\n')
    only_problem(text, "link.peer", line_of(text, "peer ="), "only for role = \"ingress\"")


@pytest.mark.parametrize("raw, fragment", [
    ("nohost", "must be \"host:port\" (IPv6 as \"[addr]:port\"), got 'nohost'"),
    ("1.2.3.4:99999", "port must be 1-65535, got 99999"),
    ("[zz]:1", "must be \"host:port\""),
    ("[1:2:3]:80", "'1:2:3' is not an IPv6 address"),
    ("fd00::1:80", "IPv6 as \"[addr]:port\""),
    ("1.2.3.4:0", "port must be 1-65535, got 0"),
    ("", "must be \"host:port\""),
])
def test_bad_peer_address(key_file, raw, fragment):
    text = ingress_text(key_file, peer=f'"{raw}"')
    only_problem(text, "link.peer", line_of(text, "peer ="), fragment)


def test_bad_address_elsewhere(key_file):
    text = ingress_text(key_file, top_extra='\n[metrics]\nstatsd = "localhost"\n')
    only_problem(text, "metrics.statsd", line_of(text, "statsd ="), "got 'localhost'")


def test_parse_address_accepts_names_and_zero_port_when_asked():
    assert parse_address("diode-low.example:7000") == Address("diode-low.example", 7000)
    assert parse_address("0.0.0.0:0", allow_zero_port=True).port == 0
    with pytest.raises(ValueError, match="port must be 1-65535"):
        parse_address("0.0.0.0:0")


def test_key_file_missing(tmp_path):
    missing = tmp_path / "nope.key"
    text = ingress_text(missing)
    only_problem(text, "link.key_file", line_of(text, "key_file"),
                 f"cannot read key file {missing}: No such file or directory")


def test_key_file_readable_by_others(key_file):
    key_file.chmod(0o644)
    text = ingress_text(key_file)
    only_problem(text, "link.key_file", line_of(text, "key_file"),
                 "is readable by others (mode 644); run chmod 600")


@pytest.mark.parametrize("content, fragment", [
    ("00" * 16 + "\n", "key file holds 16 bytes, expected 32 (64 hex digits)"),
    ("00" * 33 + "\n", "key file holds 33 bytes, expected 32"),
    ("zz" * 32 + "\n", "key file must hold 64 hexadecimal digits"),
    ("", "key file holds 0 bytes"),
])
def test_key_file_bad_content(key_file, content, fragment):
    key_file.write_text(content)
    text = ingress_text(key_file)
    only_problem(text, "link.key_file", line_of(text, "key_file"), f"{key_file}: {fragment}")


def test_accept_keys_file_checked(key_file, tmp_path):
    bad = tmp_path / "old.key"
    bad.write_text(format_key(KEY))
    bad.chmod(0o640)
    text = egress_text(key_file, link_extra=f'accept_keys = [{{ id = 2, file = "{bad}" }}]\n')
    only_problem(text, "link.accept_keys", line_of(text, "accept_keys"), "mode 640")


def test_accept_key_with_the_primary_key_id_is_refused(key_file, tmp_path):
    """An accepted key with link.key_id's id would silently replace the primary key."""
    old = tmp_path / "old.key"
    old.write_text(format_key(bytes(32)))
    old.chmod(0o600)
    text = egress_text(key_file, link_extra=f'key_id = 4\n'
                       f'accept_keys = [{{ id = 4, file = "{old}" }}]\n')
    msg = only_problem(text, "link.accept_keys", line_of(text, "accept_keys"),
                       "id 4 is link.key_id, the primary key")
    assert "an id of its own" in msg


def test_rate_records_paces_by_records_as_well(key_file):
    assert loads(ingress_text(key_file), "node.toml").link.rate_records == 0.0  # unpaced
    cfg = loads(ingress_text(key_file, link_extra="rate_records = 50000\n"), "node.toml")
    assert cfg.link.rate_records == 50000.0
    for value, shown in (("-1", "got -1"), ('"fast"', "got 'fast'"), ("2e9", "got 2000000000.0")):
        text = ingress_text(key_file, link_extra=f"rate_records = {value}\n")
        only_problem(text, "link.rate_records", line_of(text, "rate_records"),
                     "must be records/s between 0 (unpaced) and 100000000, " + shown)


def test_link_id_goes_into_the_config(key_file):
    cfg = loads(egress_text(key_file, link_extra='link_id = "plant-7.dmz"\n'), "node.toml")
    assert cfg.link.link_id == "plant-7.dmz"
    text = egress_text(key_file, link_extra='link_id = "two words"\n')
    only_problem(text, "link.link_id", line_of(text, "link_id"), "the same on both sides")


def test_block_symbols_plus_repair_over_255(key_file):
    text = ingress_text(key_file, link_extra="block_symbols = 200\nfec_redundancy_percent = 50\n")
    only_problem(text, "link.block_symbols", line_of(text, "block_symbols"),
                 "block_symbols 200 with 50.0% redundancy needs 300 symbols; the limit is 255")


def test_block_symbols_at_the_limit_is_fine(key_file):
    cfg = loads(ingress_text(key_file, link_extra="block_symbols = 170\n"
                             "fec_redundancy_percent = 50\n"), "x.toml")
    assert cfg.link.block_symbols == 170


def test_reorder_window_smaller_than_twice_interleave(key_file):
    text = egress_text(key_file, link_extra="interleave_depth = 8\nreorder_window_blocks = 10\n")
    only_problem(text, "link.reorder_window_blocks", line_of(text, "reorder_window_blocks"),
                 "must be at least twice interleave_depth (16), got 10")


def test_duplicate_channel_id(key_file):
    channel = ('[[channel]]\nid = 1\nname = "a"\ntype = "udp"\n[channel.udp]\n'
               'listen = "127.0.0.1:1"\n\n[[channel]]\nid = 1\nname = "b"\ntype = "udp"\n'
               '[channel.udp]\nlisten = "127.0.0.1:2"\n')
    text = ingress_text(key_file, channel=channel)
    only_problem(text, "channel[1].id", line_of(text, "id = 1", nth=2),
                 "channel id 1 is already used by channel[0]")


def test_duplicate_channel_name(key_file):
    channel = ('[[channel]]\nid = 1\nname = "same"\ntype = "null"\n'
               '\n[[channel]]\nid = 2\nname = "same"\ntype = "null"\n')
    text = egress_text(key_file, channel=channel)
    only_problem(text, "channel[1].name", line_of(text, 'name = "same"', nth=2),
                 "channel name 'same' is already used by channel[0]")


def test_unknown_channel_type(key_file):
    channel = '[[channel]]\nid = 1\nname = "p"\ntype = "pigeon"\n'
    text = ingress_text(key_file, channel=channel)
    only_problem(text, "channel[0].type", line_of(text, 'type = "pigeon"'), "must be one of ")


def test_channel_type_not_for_this_role(key_file):
    channel = '[[channel]]\nid = 1\nname = "gen"\ntype = "generator"\n'
    text = egress_text(key_file, channel=channel)
    only_problem(text, "channel[0].type", line_of(text, 'type = "generator"'),
                 "channel type 'generator' cannot be used on an egress (only on ingress)")


def test_udp_channel_missing_listen(key_file):
    channel = '[[channel]]\nid = 1\nname = "u"\ntype = "udp"\n\n[channel.udp]\n'
    text = ingress_text(key_file, channel=channel)
    only_problem(text, "channel[0].udp.listen", line_of(text, "[channel.udp]"), "is required")


def test_udp_channel_without_its_table(key_file):
    channel = '[[channel]]\nid = 1\nname = "u"\ntype = "udp"\n'
    text = egress_text(key_file, channel=channel)
    only_problem(text, "channel[0].udp.target", line_of(text, "[[channel]]"), "is required")


def test_udp_channel_missing_target_on_second_channel(key_file):
    channel = ('[[channel]]\nid = 1\nname = "n"\ntype = "null"\n\n'
               '[[channel]]\nid = 2\nname = "u"\ntype = "udp"\n\n[channel.udp]\n'
               'listen = "127.0.0.1:5"\n')
    text = egress_text(key_file, channel=channel)
    found = problems(text)
    lu = line_of(text, "[channel.udp]")
    assert found == [
        f"node.toml:{line_of(text, 'listen')}: channel[1].udp.listen: unknown key (known: target)",
        f"node.toml:{lu}: channel[1].udp.target: is required",
    ]


def test_unknown_key_in_udp_table(key_file):
    channel = ('[[channel]]\nid = 1\nname = "u"\ntype = "udp"\n\n[channel.udp]\n'
               'listen = "127.0.0.1:5514"\ncolour = "red"\n')
    text = ingress_text(key_file, channel=channel)
    only_problem(text, "channel[0].udp.colour", line_of(text, "colour"),
                 "unknown key (known: include_source, listen)")


def test_toml_syntax_error(key_file):
    text = ingress_text(key_file).replace('mtu', 'x').replace(
        'node_name = "high-1"', 'node_name = "high-1')
    found = problems(text)
    assert len(found) == 1
    assert re.match(rf"node\.toml:{line_of(text, 'node_name')}: TOML syntax error: ", found[0])


def test_duplicate_key_is_a_syntax_error(key_file):
    text = ingress_text(key_file, link_extra="mtu = 1500\nmtu = 9000\n")
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(f"node.toml:{line_of(text, 'mtu', nth=2)}: TOML syntax error:")


def test_several_problems_all_reported_in_file_order(key_file):
    text = ingress_text(key_file, link_extra="mtu = 1\ninterleave_depth = 0\n",
                        top_extra="extra = 1\n")
    found = problems(text)
    assert [p.split(": ")[1] for p in found] == ["extra", "link.mtu", "link.interleave_depth"]


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "absent.toml")
    assert info.value.problems == [f"{tmp_path / 'absent.toml'}: cannot read: "
                                   "No such file or directory"]
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'role = "\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert info.value.problems == [f"{bad}: not UTF-8 text"]


# -- the CLI ------------------------------------------------------------------------------
def test_check_config_cli_ok(key_file, tmp_path, capsys):
    a = tmp_path / "in.toml"
    a.write_text(ingress_text(key_file))
    b = tmp_path / "out.toml"
    b.write_text(egress_text(key_file))
    assert cli.main(["check-config", str(a), str(b)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{a}: ok (ingress, 1 channel)", f"{b}: ok (egress, 2 channels)"]
    assert err == ""


def test_check_config_cli_problems(key_file, tmp_path, capsys):
    key_file.chmod(0o644)
    bad = tmp_path / "bad.toml"
    bad.write_text(ingress_text(key_file, peer='"nohost"', link_extra="mtu = 12\n"))
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("role = \n")
    good = tmp_path / "good.toml"
    good.write_text(egress_text(key_file).replace('key_file', 'mode = "encrypt"\nkey_file'))
    rc = cli.main(["check-config", "--no-files", str(good), str(bad), str(syntax)])
    out, err = capsys.readouterr()
    assert rc == cli.EX_CONFIG
    assert out == f"{good}: ok (egress, 2 channels)\n"
    lines = err.splitlines()
    assert "Traceback" not in err
    assert [ln.split(": ")[1] for ln in lines] == ["link.peer", "link.mtu", "TOML syntax error"]
    assert all(re.match(rf"{re.escape(str(p))}:\d+: ", ln)
               for p, ln in zip((bad, bad, syntax), lines, strict=True))
    # with the key files checked, the mode problem shows up too
    rc = cli.main(["check-config", "-q", str(good), str(bad)])
    out, err = capsys.readouterr()
    assert rc == cli.EX_CONFIG and out == ""
    assert len(err.splitlines()) == 4 and "run chmod 600" in err


def test_check_config_cli_missing_file(tmp_path, capsys):
    assert cli.main(["check-config", str(tmp_path / "none.toml")]) == cli.EX_CONFIG
    out, err = capsys.readouterr()
    assert err.strip() == f"{tmp_path / 'none.toml'}: cannot read: No such file or directory"
    assert "Traceback" not in err


def test_keygen_writes_a_loadable_key(tmp_path, capsys):
    path = tmp_path / "new.key"
    assert cli.main(["keygen", str(path)]) == 0
    assert os.stat(path).st_mode & 0o777 == 0o600
    cfg = load(_write(tmp_path / "k.toml", ingress_text(path)))
    assert cfg.link.key_file == str(path)
    assert cli.main(["keygen", str(path)]) == 2  # never overwrites without --force
    assert "exists" in capsys.readouterr().err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("args,message", [
    (["--rate-mbit", "-5"], "argument --rate-mbit: -5 is outside 0..400000"),
    (["--seconds", "x"], "argument --seconds: 'x' is not a number"),
    (["--mtu", "100"], "argument --mtu: 100 is outside 576..9216"),  # link.mtu's range
    (["--mtu", "9217"], "argument --mtu: 9217 is outside 576..9216"),
    (["--size", "1.5"], "argument --size: '1.5' is not an integer"),
])
def test_bench_arguments_out_of_range(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *args])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"ddc bench: error: {message}"

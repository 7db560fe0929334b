"""Role conventions: one MTU for the diode NIC and the daemon, settings that can be cleared,
roles that carry their own files."""

from __future__ import annotations

import tomllib

import yaml

from tests import roles

INVENTORY = roles.REPO / "ansible" / "inventories" / "example"


def _host_vars(host: str) -> dict:
    """The example inventory's variables for one host: group_vars/all, then the host's other
    groups (same depth: by name, as Ansible merges them), then host_vars."""
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())["all"]["children"]
    groups = sorted(g for g, spec in hosts.items() if host in (spec.get("hosts") or {}))
    variables = {"inventory_hostname": host, "group_names": groups}
    for name in ["all", *groups]:
        path = INVENTORY / "group_vars" / f"{name}.yml"
        if path.is_file():
            variables.update(yaml.safe_load(path.read_text()) or {})
    path = INVENTORY / "host_vars" / f"{host}.yml"
    if path.is_file():
        variables.update(yaml.safe_load(path.read_text()) or {})
    return variables


def _site_ddc_params() -> dict:
    (play,) = yaml.safe_load((roles.REPO / "ansible" / "site.yml").read_text())
    (entry,) = [r for r in play["roles"] if r["role"] == "ddc"]
    return {k: v for k, v in entry.items() if k not in ("role", "when")}


def _rendered_link(host: str) -> dict:
    inventory = _host_vars(host)
    variables = {**roles.role_variables("ddc"), **inventory}
    for key, value in _site_ddc_params().items():
        variables[key] = roles.render_text(value, variables) if isinstance(value, str) else value
    variables["ddc_link_mtu"] = int(variables["ddc_link_mtu"])
    text = roles.render("ddc", "etc/ddc/ddc.toml.j2", variables)
    return tomllib.loads(text)["link"], inventory


def test_one_mtu_feeds_the_nic_and_the_daemon():
    mtus = {}
    for host in ("ddc-ingress-pi", "ddc-egress-graviton"):
        link, inventory = _rendered_link(host)
        nic = inventory.get("diode_network_mtu", roles.role_variables("diode_network")[
            "diode_network_mtu"])
        assert link["mtu"] == nic, f"{host}: daemon mtu {link['mtu']}, NIC mtu {nic}"
        mtus[host] = nic
    assert len(set(mtus.values())) == 1, f"the two ends of the link disagree: {mtus}"


def test_the_ddc_role_refuses_a_second_mtu_setting():
    tasks = (roles.ROLES / "ddc" / "tasks" / "main.yml").read_text()
    assert "'mtu' not in ddc_link" in tasks


def test_clearing_a_setting_removes_its_drop_in():
    tasks = yaml.safe_load((roles.ROLES / "ddc" / "tasks" / "main.yml").read_text())
    flat = [t for task in tasks for t in (task.get("block") or [task])]
    for dropin, setting in (("cpu.conf", "ddc_cpu_affinity"),
                            ("overrides.conf", "ddc_unit_overrides")):
        removals = [t for t in flat
                    if (t.get("ansible.builtin.file") or {}).get("state") == "absent"
                    and t["ansible.builtin.file"]["path"].endswith("/" + dropin)]
        assert removals, f"nothing removes {dropin} when {setting} is cleared"
        assert removals[0]["when"] == f"{setting} | length == 0"


def test_roles_are_self_contained():
    # Nothing a role installs comes from outside its own directory (role_path/../..).
    for path in sorted(roles.ROLES.rglob("*")):
        if path.is_file() and path.suffix in (".yml", ".j2") and "molecule" not in path.parts:
            assert "role_path" not in path.read_text(), f"{path}: reaches out of the role"
    for role in ("ddc", "kernel_tuning"):
        assert list((roles.ROLES / role / "files").rglob("*.service")), role
    stray = [p for p in (roles.REPO / "systemd").rglob("*") if p.is_file()]
    assert not stray, f"unit files live in the role that installs them: {stray}"


def test_the_ddc_role_writes_filter_rules_and_compression_that_ddc_compiles():
    """A channel's filter rules are a list of tables with a nested match table: the role's
    template writes them as TOML inline tables (to_json alone wrote JSON objects, which
    are not TOML), and the link's compression keys pass through."""
    from appliance.config import loads

    variables = {**roles.role_variables("ddc"), **_host_vars("ddc-ingress-pi")}
    for key, value in _site_ddc_params().items():
        variables[key] = roles.render_text(value, variables) if isinstance(value, str) else value
    variables["ddc_link_mtu"] = int(variables["ddc_link_mtu"])
    variables["ddc_link"] = {**variables["ddc_link"], "peer": "192.0.2.2:4789",
                             "compression": "zstd", "compression_level": 5}
    variables["ddc_channels"] = [{
        "id": 1, "name": "logs", "type": "udp", "udp": {"listen": "127.0.0.1:5514"},
        "filter_default": "deny",
        "filter": [{"name": "no-debug", "action": "deny",
                    "match": {"value_json_field": "level", "value_json_equals": "debug"}},
                   {"action": "allow", "match": {"topic_regex": "a\\..*", "partition": [0, 1]}}],
    }]
    text = roles.render("ddc", "etc/ddc/ddc.toml.j2", variables)
    cfg = loads(text, "ddc.toml", check_files=False)
    assert cfg.link.compression_level == 5
    assert cfg.channels[0].filter.rule_names() == ["no-debug", "default"]
    assert tomllib.loads(text)["channel"][0]["filter"][1]["match"] == {
        "topic_regex": "a\\..*", "partition": [0, 1]}

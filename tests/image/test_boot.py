"""Boot both appliance images under qemu-system-aarch64 and check what an operator
relies on:

- generic: `-M virt -cpu cortex-a72`, UEFI firmware from pflash, the whole image
  as a virtio disk (firmware -> GRUB -> kernel -> systemd);
- rpi: `-M raspi4b` (QEMU >= 9), the whole image as the SD card, the kernel,
  initramfs, device tree and command line taken from the image's own boot
  partition as the Pi's firmware would (support.pi_boot_files says what QEMU's
  model makes differ). The emulated Pi 4 has no Ethernet (QEMU models neither
  the GENET controller nor the USB bridge behind PCIe): the node's config uses
  loopback only, which is what the generic boot does too.

Two boots per image, each of its own sparse copy of image/out/ddc-VARIANT-arm64.img:

- good: the operator's first-boot files for an egress node (ddc/role,
  ddc/egress.toml, ddc/link.key) are put on the boot partition (EFI, or the Pi's
  firmware partition) with mtools. The system must reach multi-user with
  ddc@egress active and its watchdog fed, THP as the kernel command line sets
  it, no failed unit; ssh/authorized_keys turns sshd on.
- bad: the same with an invalid MTU; ddc-firstboot must refuse with its one
  documented line on the console and in the journal, and the daemon stay off;
  without a key sshd stays off.

How the state is read: a TEST-ONLY unit (tests/image/files/) is written into the
copy's root file system with debugfs. It waits for start-up to finish, prints
"DDC-REPORT: key: value" lines to the serial console and powers the VM off.
No login, no network, nothing of it is in the image itself.

Build the images first (image/build.sh generic|rpi, or scripts/ci/image.sh).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from . import support
from .support import Boot

FILES = Path(__file__).parent / "files"
BOOT_TIMEOUT = float(os.environ.get("DDC_BOOT_TIMEOUT", "1200"))
# The good boot's copy is grown by this much: systemd-repart + growfs must take it.
GROW_BYTES = 512 * 1024 * 1024

pytestmark = pytest.mark.slow

# variant -> the QEMU machine that boots it
MACHINES = {"generic": "virt", "rpi": support.RASPI_MACHINE}


def _variant_param(variant: str):
    img = support.image_path(variant)
    why = support.qemu_available(MACHINES[variant])
    return pytest.param(variant, id=variant, marks=[
        pytest.mark.skipif(not img.exists(), reason=f"{img} not built (image/build.sh {variant})"),
        pytest.mark.skipif(why is not None, reason=str(why)),
    ])

EGRESS_TOML = """\
# Boot test: an egress node that needs nothing outside the VM (loopback link,
# UDP sink on loopback), pinned to the VM's two CPUs.
role = "egress"
node_name = "egress-boot-test"
state_dir = "/var/lib/ddc/egress"
status_file = "/run/ddc/egress/status.json"

[link]
bind = "127.0.0.1:4789"
mtu = 1500
key_file = "/etc/ddc/link.key"
key_id = 1

[tuning]
link_cpu = 1
channel_cpu = 0
socket_buffer_bytes = 8388608

[metrics]
statsd = "127.0.0.1:8125"
prefix = "ddc"

[logging]
syslog = "127.0.0.1:514"
level = "info"
journald = true

[[channel]]
id = 1
name = "syslog"
type = "udp"
[channel.udp]
target = "127.0.0.1:5514"
"""

BAD_EGRESS_TOML = EGRESS_TOML.replace("mtu = 1500", "mtu = 100000")
BAD_LINE = ("ddc-firstboot: refusing to start ddc@egress: /etc/ddc/egress.toml:10: link.mtu: "
            "must be an integer MTU between 576 and 9216, got 100000")


# Any public key line will do: sshd reads authorized_keys only at login time.
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRkYy1ib290LXRlc3Qta2V5LW5vdC1hLXJlYWwta2V5 "
           "operator@ddc-boot-test\n")


def _key() -> str:
    return "# ddc link key (AES-256), boot test\n" + os.urandom(32).hex() + "\n"


def _prepare(variant: str, workdir: Path, name: str, boot_files: dict[str, str],
             grow: int = 0) -> Path:
    # QEMU's SD card must be a power of two in size: the Pi image's copy is grown
    # to one (the first boot's ddc-growroot takes what is added).
    img = support.copy_image(support.image_path(variant), workdir / f"{name}.img",
                             grow_bytes=grow, grow_to_power_of_two=variant == "rpi")
    boot_part, root = support.partitions(img)[:2]
    support.fat_put(img, boot_part, boot_files)
    unit = "/etc/systemd/system/ddc-test-report.service"
    support.ext4_write(
        img, root,
        {unit: ((FILES / "ddc-test-report.service").read_text(), 0o644),
         "/usr/local/libexec/ddc/test-report": ((FILES / "test-report.sh").read_text(), 0o755)},
        links={"/etc/systemd/system/multi-user.target.wants/ddc-test-report.service": unit},
    )
    return img


def _boot(variant: str, workdir: Path, check_set: str, boot_files: dict[str, str],
          grow: int = 0) -> Boot:
    # The generic image's names stay as they were (boot-good.console.log, ...).
    name = check_set if variant == "generic" else f"{variant}-{check_set}"
    img = _prepare(variant, workdir, name, boot_files, grow)
    boot = support.boot if MACHINES[variant] == "virt" else support.boot_raspi4b
    result = boot(img, workdir, timeout=BOOT_TIMEOUT, name=name)
    img.unlink(missing_ok=True)
    # Keep the console log and the time next to the image (CI artefacts).
    support.OUT.mkdir(parents=True, exist_ok=True)
    (support.OUT / f"boot-{name}.console.log").write_text(result.console)
    times = support.OUT / "boot-timings.json"
    data = json.loads(times.read_text()) if times.exists() else {}
    data[name] = {"seconds": round(result.seconds, 1), "timed_out": result.timed_out}
    times.write_text(json.dumps(data, indent=2) + "\n")
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    base = os.environ.get("DDC_BOOT_WORKDIR")
    if base:
        path = Path(base)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("boot")


@pytest.fixture(scope="module", params=[_variant_param(v) for v in MACHINES])
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def good(variant, workdir) -> Boot:
    result = _boot(variant, workdir, "good", {
        "ddc/role": "egress\n",
        "ddc/egress.toml": EGRESS_TOML,
        "ddc/link.key": _key(),
        "ssh/authorized_keys": SSH_KEY,
    }, grow=GROW_BYTES)
    assert not result.timed_out, f"no power-off within {BOOT_TIMEOUT} s:\n{result.console[-4000:]}"
    assert result.value("end") is not None, f"no complete report:\n{result.console[-4000:]}"
    return result


@pytest.fixture(scope="module")
def bad(variant, workdir) -> Boot:
    result = _boot(variant, workdir, "bad", {
        "ddc/role": "egress\r\n",  # CR LF from another system's editor is fine
        "ddc/egress.toml": BAD_EGRESS_TOML,
        "ddc/link.key": _key(),
    })
    assert not result.timed_out, f"no power-off within {BOOT_TIMEOUT} s:\n{result.console[-4000:]}"
    assert result.value("end") is not None, f"no complete report:\n{result.console[-4000:]}"
    return result


# --- good configuration --------------------------------------------------------

def test_reaches_multi_user(good):
    assert good.value("multi-user") == "active"
    assert good.value("system-state") == "running", good.report()
    assert good.value("firstboot") == "active success"


def test_ddc_egress_active_with_watchdog_fed(good):
    assert good.value("is-active ddc@egress.service") == "active", good.report()
    assert good.value("is-enabled ddc@egress.service") == "enabled"
    assert good.value("watchdog-usec") == "10s"
    w1, w2 = int(good.value("watchdog-1")), int(good.value("watchdog-2"))
    # WATCHDOG=1 keeps arriving: the last-ping timestamp moved on within 8 s.
    assert 0 < w1 < w2, (w1, w2)
    assert good.value("nrestarts") == "0"
    assert good.value("mainpid-user") == "ddc"
    # The daemon writes its status file (RuntimeDirectory=ddc/egress).
    assert '"role":"egress"' in good.value("status-file").replace(" ", "")


# THP as each image is documented to set it (docs/image.md; image/ansible/vars/VARIANT.yml
# sets kernel_tuning_thp_mode): a literal, so that changing the vars file fails here.
THP_MODE = {"generic": "madvise", "rpi": "never"}


def test_thp_as_configured_from_the_kernel_command_line(good, variant):
    mode = THP_MODE[variant]
    assert f"[{mode}]" in good.value("thp")
    cmdline = good.value("cmdline").split()
    assert f"transparent_hugepage={mode}" in cmdline
    # generic: GRUB's console; rpi: the one support.pi_boot_files gives QEMU.
    assert "console=ttyAMA0,115200" in cmdline
    assert good.value("ddc-thp") == "active"


def test_no_failed_units(good):
    assert good.value("failed-count") == "0", [line for line in good.report()
                                               if line.startswith("failed")]


def test_vector_configured(good):
    # Vector's package cannot be downloaded on the build machine: the image has
    # its configuration and the vector.service drop-in, not the binary / unit.
    assert "ddc.conf" in good.value("vector-dropin").split()
    assert "vector.yaml" in good.value("vector-config").split()


def test_first_boot_files_moved_with_owner_and_modes(good):
    perms = {}
    for line in good.report():
        if line.startswith("etc-ddc:"):
            path, owner, mode = line.split()[1:4]
            perms[path] = (owner, mode)
    assert perms["/etc/ddc"] == ("root:ddc", "750")
    assert perms["/etc/ddc/egress.toml"] == ("ddc:ddc", "640")
    assert perms["/etc/ddc/link.key"] == ("ddc:ddc", "600")
    assert perms["/etc/ddc/role"] == ("ddc:ddc", "640")
    assert good.value("boot-ddc-left") == "", "files left on the boot partition"


def test_ssh_on_with_a_supplied_key_still_no_passwords(good):
    # ssh/authorized_keys was on the boot partition: sshd on, host keys made on
    # the node, key login only; root still has no password.
    assert good.value("ssh") == "enabled active"
    assert int(good.value("ssh-host-keys")) > 0
    assert good.value("root-keys") == "1"
    assert good.value("root-password").startswith("!")


def test_sysctls_and_root_grown(good, variant):
    assert good.value("sysctl-rmem_max") == "33554432"
    manifest = support.manifest(variant)
    image_root = manifest["sizes"]["root_fs_mib"] * 1024 * 1024
    grower = "systemd-repart / growfs" if variant == "generic" else "ddc-growroot"
    assert int(good.value("root-size")) > image_root + GROW_BYTES // 2, \
        f"{grower} did not grow the root file system"


# --- bad configuration ---------------------------------------------------------

def test_bad_config_refused_with_one_clear_line(bad):
    console = [line for line in bad.console.splitlines() if "DDC-REPORT" not in line]
    refusals = [line for line in console if "refusing to start" in line]
    assert len(refusals) == 1, refusals
    assert BAD_LINE in refusals[0]
    journal = [line.split("DDC-REPORT: journal-firstboot:", 1)[1].strip()
               for line in bad.console.splitlines() if "journal-firstboot:" in line]
    assert BAD_LINE in journal


def test_bad_config_daemon_stays_off(bad):
    assert bad.value("is-active ddc@egress.service") in ("inactive", "unknown")
    assert bad.value("is-enabled ddc@egress.service") != "enabled"
    failed = [line for line in bad.report() if line.startswith("failed:")]
    assert len(failed) == 1 and "ddc-firstboot.service" in failed[0], failed
    assert re.match(r"failed \S+", bad.value("firstboot"))


def test_ssh_off_without_a_key(bad):
    assert bad.value("ssh") == "disabled inactive"
    assert bad.value("ssh-host-keys") == "0"
    assert bad.value("root-password").startswith("!")

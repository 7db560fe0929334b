"""Inspect the built images as files: partition tables (sfdisk), boot partitions
(mtools), root file systems (debugfs), manifest and checksums. No boot needed:
this is the whole test of the Raspberry Pi image (no QEMU model boots a Pi 4/5
with Debian 12's QEMU) and a quick check of the generic one."""

from __future__ import annotations

import hashlib
import re

import pytest

from . import support

ROOT_ARM64 = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def _need(variant: str):
    img = support.image_path(variant)
    if not img.exists():
        pytest.skip(f"{img} not built (image/build.sh {variant})")
    return img


@pytest.fixture(scope="module", params=["generic", "rpi"])
def built(request):
    img = _need(request.param)
    return request.param, img, support.partitions(img), support.manifest(request.param)


# --- both variants -------------------------------------------------------------

def test_manifest(built):
    variant, img, _, manifest = built
    assert manifest["variant"] == variant
    assert manifest["image"] == f"ddc-{variant}-arm64.img.xz"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", manifest["appliance_version"])
    assert manifest["source_date_epoch"] > 0
    pkgs = manifest["debian_packages"]
    # libssl3t64: libcrypto.so.3 for the daemon's native module (dpkg names it with :arm64).
    for name in ("linux-image-arm64", "systemd", "python3", "libssl3t64:arm64", "openssh-server"):
        assert name in pkgs, name
    assert not any(p.startswith("python3-zfec") for p in pkgs)
    py = {k.lower(): v for k, v in manifest["python_packages"].items()}
    for name in ("ddc-appliance", "confluent-kafka", "cryptography", "psutil", "tomlkit",
                 "zstandard"):  # (zstandard: link compression, issue 17)
        assert name in py, name
    assert manifest["inputs"]["debian_suite"] == "trixie"
    assert any(w.startswith("ddc_appliance-") for w in manifest["inputs"]["wheelhouse_sha256"])
    for step in ("mmdebstrap", "provision", "assemble", "compress"):
        assert step in manifest["timings_seconds"]


def test_sha256sums(built):
    variant, *_ = built
    sums = dict(reversed(line.split(None, 1)) for line in
                (support.OUT / "SHA256SUMS").read_text().splitlines())
    sums = {k.lstrip("*"): v for k, v in sums.items()}
    name = f"ddc-{variant}-arm64.manifest.json"
    assert hashlib.sha256((support.OUT / name).read_bytes()).hexdigest() == sums[name]
    assert f"ddc-{variant}-arm64.img.xz" in sums


def test_root_fs(built):
    variant, img, parts, manifest = built
    root = parts[1]
    fstab = support.ext4_read(img, root, "/etc/fstab")
    assert f"UUID={manifest['identifiers']['root_fs_uuid']}" in fstab
    bootmnt = "/boot/efi" if variant == "generic" else "/boot/firmware"
    assert re.search(rf"^UUID=\S+\s+{bootmnt}\s+vfat\s", fstab, re.M)
    # No default passwords: root locked.
    shadow = support.ext4_read(img, root, "/etc/shadow")
    root_pw = next(line.split(":")[1] for line in shadow.splitlines() if line.startswith("root:"))
    assert root_pw.startswith("!"), root_pw
    # SSH off, no host keys baked in.
    wants = support.ext4_ls(img, root, "/etc/systemd/system/multi-user.target.wants")
    assert "ssh.service" not in wants
    assert "ddc-firstboot.service" in wants
    assert not [f for f in support.ext4_ls(img, root, "/etc/ssh") if f.startswith("ssh_host_")]
    # The daemon, its unit (not enabled before first boot) and the roles' files.
    assert support.ext4_exists(img, root, "/opt/ddc/venv/bin/ddc")
    assert support.ext4_exists(img, root, "/etc/systemd/system/ddc@.service")
    assert not [w for w in wants if w.startswith("ddc@")]
    sysinit = support.ext4_ls(img, root, "/etc/systemd/system/sysinit.target.wants")
    assert "ddc-thp.service" in sysinit
    assert "net.core.rmem_max" in support.ext4_read(img, root, "/etc/sysctl.d/60-ddc-net.conf")
    assert support.ext4_exists(img, root, "/etc/systemd/system/vector.service.d/ddc.conf")
    assert support.ext4_exists(img, root, "/etc/vector/vector.yaml")
    assert support.ext4_read(img, root, "/etc/machine-id").strip() in ("", "uninitialized")
    # First boot's preset-all must not switch ssh (or anything else) on.
    preset = support.ext4_read(img, root, "/etc/systemd/system-preset/00-ddc.preset")
    assert "disable *" in preset.splitlines()


def test_boot_partition_readme_and_dropbox(built):
    _, img, parts, _ = built
    names = support.fat_ls(img, parts[0])
    assert "::/README.txt" in names, names
    # The operator's drop boxes exist and are empty in the image.
    assert "::/ddc/" in names and "::/ssh/" in names, names
    assert not [n for n in names if n.startswith(("::/ddc/", "::/ssh/")) and not n.endswith("/")]


# --- generic ---------------------------------------------------------------------

def test_generic_gpt_esp_and_grub():
    img = _need("generic")
    table = support.partition_table(img)
    assert table["label"] == "gpt"
    esp, root = support.partitions(img)
    assert esp.type == ESP and root.type == ROOT_ARM64
    assert esp.start == 2048
    efi = support.fat_read_bytes(img, esp, "/EFI/BOOT/BOOTAA64.EFI")
    assert efi.startswith(b"MZ")  # a PE/COFF (EFI) executable
    grub = support.ext4_read(img, root, "/boot/grub/grub.cfg")
    linux = next(line for line in grub.splitlines() if line.strip().startswith("linux /vmlinuz "))
    args = linux.split()
    assert "transparent_hugepage=madvise" in args
    assert "console=ttyAMA0,115200" in args
    manifest = support.manifest("generic")
    assert f"root=UUID={manifest['identifiers']['root_fs_uuid']}" in args
    # kernel_tuning edited the persistent setting, not only grub.cfg.
    assert "transparent_hugepage=madvise" in support.ext4_read(img, root, "/etc/default/grub")
    assert support.ext4_exists(img, root, "/etc/repart.d/50-root.conf")


# --- rpi ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rpi():
    img = _need("rpi")
    return img, support.partitions(img), support.manifest("rpi")


def test_rpi_mbr_layout(rpi):
    img, parts, _ = rpi
    table = support.partition_table(img)
    assert table["label"] == "dos"
    assert len(parts) == 2
    boot, root = parts
    assert boot.start == 2048 and boot.type == "c" and boot.bootable
    assert root.type == "83" and root.start == boot.start + boot.size
    dump = support.run("sfdisk", "--dump", img)
    assert "label: dos" in dump


def test_rpi_boot_files(rpi):
    img, (boot, _), _ = rpi
    config = support.fat_read(img, boot, "/config.txt")
    assert "arm_64bit=1" in config
    assert "enable_uart=1" in config
    # What the Pi 4's firmware reads (and the raspi4b boot test loads).
    settings = support.pi_config(config)
    kernel, initrd = settings["kernel"], settings["initramfs"]
    names = {n.rsplit("/", 1)[-1] for n in support.fat_ls(img, boot)}
    for f in (kernel, initrd, "start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "cmdline.txt"):
        assert f in names, (f, sorted(names))


def test_rpi_cmdline(rpi):
    img, (boot, root), manifest = rpi
    cmdline = support.fat_read(img, boot, "/cmdline.txt")
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n"), repr(cmdline)
    args = cmdline.split()
    assert f"root=UUID={manifest['identifiers']['root_fs_uuid']}" in args
    thp = [a for a in args if a.startswith("transparent_hugepage=")]
    assert thp in (["transparent_hugepage=never"], ["transparent_hugepage=madvise"]), args
    assert "rootwait" in args
    assert "console=ttyS1,115200" in args
    assert not [a for a in args if a.startswith("cma=")], "cma= can make a Pi 4 unbootable"
    wants = support.ext4_ls(img, root, "/etc/systemd/system/multi-user.target.wants")
    assert "ddc-growroot.service" in wants
    # Kernel upgrades regenerate cmdline.txt: the THP setting must survive them.
    assert thp[0] in support.ext4_read(img, root, "/etc/default/raspi-extra-cmdline")

"""Helpers for the image tests: partition tables, FAT (mtools) and ext4 (debugfs)
access to a disk image file without loop devices, and booting it under QEMU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("DDC_IMAGE_OUT", REPO / "image" / "out"))
SECTOR = 512

# UEFI firmware for QEMU's virt machine (Debian's qemu-efi-aarch64).
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
QEMU_EFI = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")


def image_path(variant: str) -> Path:
    return OUT / f"ddc-{variant}-arm64.img"


def manifest(variant: str) -> dict:
    return json.loads((OUT / f"ddc-{variant}-arm64.manifest.json").read_text())


def run(*cmd: str | os.PathLike, check: bool = True, input: str | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


@dataclass
class Partition:
    node: str
    start: int  # sectors
    size: int  # sectors
    type: str
    uuid: str | None = None
    name: str | None = None
    bootable: bool = False

    @property
    def offset(self) -> int:
        return self.start * SECTOR


def partition_table(img: Path) -> dict:
    return json.loads(run("sfdisk", "--json", img))["partitiontable"]


def partitions(img: Path) -> list[Partition]:
    table = partition_table(img)
    return [Partition(node=p["node"], start=p["start"], size=p["size"], type=p["type"],
                      uuid=p.get("uuid"), name=p.get("name"), bootable=p.get("bootable", False))
            for p in table["partitions"]]


# --- FAT (mtools: image@@offset addresses a file system inside the image) ------

def _fat(img: Path, part: Partition) -> str:
    return f"{img}@@{part.offset}"


def mtools_env() -> dict:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def fat_ls(img: Path, part: Partition, path: str = "::/") -> list[str]:
    """Names in a FAT directory (recursive listing of plain names)."""
    proc = subprocess.run(["mdir", "-b", "-/", "-i", _fat(img, part), path],
                          capture_output=True, text=True, env=mtools_env())
    if proc.returncode != 0:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def fat_read_bytes(img: Path, part: Partition, path: str) -> bytes:
    proc = subprocess.run(["mtype", "-i", _fat(img, part), f"::{path}"], capture_output=True,
                          env=mtools_env())
    if proc.returncode != 0:
        raise FileNotFoundError(f"{path} on {part.node}: {proc.stderr.decode().strip()}")
    return proc.stdout


def fat_read(img: Path, part: Partition, path: str) -> str:
    return fat_read_bytes(img, part, path).decode()


def fat_put(img: Path, part: Partition, files: dict[str, str | bytes]) -> None:
    """Write files (FAT path -> content) into the FAT partition, making directories."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"ddc-fat-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir(parents=True)
    try:
        made: set[str] = set()
        for path, content in files.items():
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    subprocess.run(["mmd", "-D", "s", "-i", _fat(img, part), f"::/{d}"],
                                   capture_output=True, env=mtools_env())
                    made.add(d)
            local = tmp / parts[-1]
            local.write_bytes(content.encode() if isinstance(content, str) else content)
            r = subprocess.run(["mcopy", "-o", "-i", _fat(img, part), str(local), f"::/{path}"],
                               capture_output=True, text=True, env=mtools_env())
            assert r.returncode == 0, f"mcopy {path}: {r.stderr}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- ext4 (debugfs: "image?offset=N" opens a file system inside the image) -----

def _ext4(img: Path, part: Partition) -> str:
    return f"{img}?offset={part.offset}"


def ext4_read(img: Path, part: Partition, path: str) -> str:
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", _ext4(img, part)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or "File not found" in proc.stderr:
        raise FileNotFoundError(f"{path}: {proc.stderr.strip()}")
    return proc.stdout


def ext4_stat(img: Path, part: Partition, path: str) -> str:
    return run("debugfs", "-R", f"stat {path}", _ext4(img, part))


def ext4_exists(img: Path, part: Partition, path: str) -> bool:
    proc = subprocess.run(["debugfs", "-R", f"stat {path}", _ext4(img, part)],
                          capture_output=True, text=True)
    return proc.returncode == 0 and "File not found" not in proc.stderr and "Inode:" in proc.stdout


def ext4_ls(img: Path, part: Partition, path: str) -> list[str]:
    out = run("debugfs", "-R", f"ls -p {path}", _ext4(img, part))
    # -p: /inode/mode/uid/gid/name/size/
    return [f.split("/")[5] for f in out.splitlines() if f.count("/") >= 6
            and f.split("/")[5] not in (".", "..")]


def ext4_write(img: Path, part: Partition, files: dict[str, tuple[str, int]],
               links: dict[str, str] | None = None) -> None:
    """Add files (path -> (content, mode)) and symlinks (path -> target) to the ext4
    file system, owned by root."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"ddc-ext4-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir(parents=True)
    try:
        cmds = []
        for i, (path, (content, mode)) in enumerate(files.items()):
            local = tmp / f"f{i}"
            local.write_text(content)
            cmds.append(f"rm {path}")
            cmds.append(f"write {local} {path}")
            cmds.append(f"sif {path} mode 0{0o100000 | mode:o}")
            cmds.append(f"sif {path} uid 0")
            cmds.append(f"sif {path} gid 0")
        for path, target in (links or {}).items():
            cmds.append(f"rm {path}")
            cmds.append(f"symlink {path} {target}")
        script = tmp / "cmds"
        script.write_text("\n".join(cmds) + "\n")
        run("debugfs", "-w", "-f", script, _ext4(img, part))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- QEMU ------------------------------------------------------------------------

# The Raspberry Pi 4 machine of QEMU >= 9 (Debian 12 has 7.2: scripts/ci/image.sh
# installs QEMU 10 from bookworm-backports).
RASPI_MACHINE = "raspi4b"
RASPI_DTB = "bcm2711-rpi-4-b.dtb"
# Nodes of the Pi 4 device tree that QEMU's raspi4b does not model: the HDMI block
# at 0x7ef00000 (its clock, the always-on interrupt controller, both HDMI encoders
# and their DDC I2C buses). The kernel's drivers for them take a synchronous
# external abort on the first register read, which kills PID 1 while it probes
# them. They are switched off in a copy of the image's own device tree, as the Pi
# firmware applies overlays to it; a headless node has no use for them. (QEMU
# itself switches off PCIe, GENET, the RNG200 and the thermal sensor.)
RASPI_ABSENT_NODES = (
    "/soc/clock@7ef00000",
    "/soc/interrupt-controller@7ef00100",
    "/soc/hdmi@7ef00700",
    "/soc/i2c@7ef04500",
    "/soc/hdmi@7ef05700",
    "/soc/i2c@7ef09500",
)
# QEMU puts the SD card on the EMMC controller at 0x7e300000 (the Arasan SDHCI, on a real
# Pi 4 the Wi-Fi's SDIO bus), not on EMMC2 at 0x7e340000 where a Pi 4's card slot is. That
# controller's node names the Wi-Fi chip's power sequence, switched by a GPIO of the
# firmware's GPIO expander, which QEMU's mailbox does not answer: the power sequence fails
# (-EIO), the controller never probes and the root file system is never found. Without the
# property the controller probes and the card is mmcblk0 (root= names a UUID, so the
# device name does not matter).
RASPI_FIRMWARE_GPIO_PROPERTIES = {
    "/soc/mmc@7e300000": ("mmc-pwrseq",),
}


def _qemu_machines() -> str:
    proc = subprocess.run(["qemu-system-aarch64", "-M", "help"], capture_output=True, text=True)
    return proc.stdout


def qemu_available(machine: str = "virt") -> str | None:
    """Why a boot test on this QEMU machine cannot run here, or None."""
    if not shutil.which("qemu-system-aarch64"):
        return "qemu-system-aarch64 missing (apt-get install qemu-system-arm)"
    if machine == "virt" and not (AAVMF_CODE.exists() or QEMU_EFI.exists()):
        return "no arm64 UEFI firmware (apt-get install qemu-efi-aarch64)"
    if machine == RASPI_MACHINE:
        if not re.search(rf"^{RASPI_MACHINE}\s", _qemu_machines(), re.M):
            return (f"this qemu-system-aarch64 has no {RASPI_MACHINE} machine (QEMU >= 9: "
                    "scripts/ci/image.sh installs it from bookworm-backports)")
        if not shutil.which("fdtput"):
            return "fdtput missing (apt-get install device-tree-compiler)"
    return None


@dataclass
class Boot:
    console: str
    seconds: float
    exit_code: int | None
    timed_out: bool

    def report(self) -> list[str]:
        """Lines the test report unit printed (prefix DDC-REPORT:)."""
        return [line.split("DDC-REPORT:", 1)[1].strip() for line in self.console.splitlines()
                if "DDC-REPORT:" in line]

    def value(self, key: str) -> str | None:
        for line in self.report():
            if line.startswith(key + ":"):
                return line[len(key) + 1:].strip()
        return None


# The kernel's last line at a power-off. The virt machine then exits QEMU (PSCI);
# raspi4b has no power-off, so QEMU is stopped once the line is on the console.
POWER_DOWN = "reboot: Power down"


def _run_qemu(cmd: list[str], console: Path, timeout: float) -> Boot:
    """Run QEMU until it exits, the guest's kernel has powered down, or the timeout
    passes (QEMU is killed in every case, also when the test fails)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    timed_out = False
    try:
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout:
                timed_out = True
                break
            if console.exists() and POWER_DOWN in console.read_text(errors="replace"):
                time.sleep(1)  # the last lines still on their way to the file
                break
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    seconds = time.monotonic() - t0
    text = console.read_text(errors="replace") if console.exists() else ""
    if proc.returncode not in (0, None, -9) and not timed_out:
        text += f"\n[qemu exited {proc.returncode}: {err.decode(errors='replace')}]\n"
    return Boot(console=text, seconds=seconds, exit_code=proc.returncode, timed_out=timed_out)


def boot(img: Path, workdir: Path, timeout: float = 900, name: str = "boot") -> Boot:
    """Boot a disk image under qemu-system-aarch64 (virt, cortex-a72, UEFI from
    pflash) until it powers off or the timeout passes; the serial console is
    written to WORKDIR/NAME.console.log."""
    console = workdir / f"{name}.console.log"
    vars_copy = workdir / f"{name}.AAVMF_VARS.fd"
    if AAVMF_CODE.exists():
        shutil.copyfile(AAVMF_VARS, vars_copy)
        firmware = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    else:
        firmware = ["-bios", str(QEMU_EFI)]
    cmd = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048",
        *firmware,
        "-drive", f"if=none,id=disk0,format=raw,file={img}",
        "-device", "virtio-blk-pci,drive=disk0",
        # No network: nothing in the guest may reach out (and the egress under test
        # listens on loopback).
        "-nic", "none",
        "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}",
        "-no-reboot",
    ]
    return _run_qemu(cmd, console, timeout)


@dataclass
class PiBootFiles:
    """What the Pi's firmware would load, read from the image's boot partition."""
    kernel: Path
    initrd: Path | None
    dtb: Path
    cmdline: str


def pi_config(config_txt: str, model: str = "pi4") -> dict[str, str]:
    """The settings of config.txt that apply to MODEL: those outside any section
    and in [all] or [MODEL] ([pi5], [cm4], ... are for other boards). The
    firmware's `initramfs FILE followkernel` is read as initramfs=FILE."""
    settings: dict[str, str] = {}
    applies = True
    for raw in config_txt.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            applies = line[1:-1] in ("all", model)
            continue
        if not applies:
            continue
        if line.startswith("initramfs "):
            settings["initramfs"] = line.split()[1]
        elif "=" in line:
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def pi_boot_files(img: Path, workdir: Path, console: str = "ttyAMA0,115200") -> PiBootFiles:
    """Take kernel, initramfs, device tree and command line from the image's FAT
    boot partition as a Pi 4's firmware does (config.txt: kernel=, initramfs,
    device_tree=; cmdline.txt), for QEMU's direct kernel boot: QEMU runs no
    VideoCore firmware. Three things differ from a real Pi, all because of QEMU's
    model: the device tree's absent nodes are switched off (RASPI_ABSENT_NODES),
    the SD card's controller loses the Wi-Fi power sequence QEMU cannot run
    (RASPI_FIRMWARE_GPIO_PROPERTIES), and the serial console is moved from the
    mini UART (ttyS1, what the image configures for a Pi 4's GPIO header) to the
    PL011 (ttyAMA0): with the console on QEMU's mini UART the kernel reported an
    RCU stall on CPU 0 and made no progress, on the PL011 it boots."""
    boot_part = partitions(img)[0]
    settings = pi_config(fat_read(img, boot_part, "/config.txt"))
    out = workdir / f"{img.stem}.pi-boot"
    out.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = out / name
        path.write_bytes(fat_read_bytes(img, boot_part, "/" + name))
        return path

    kernel = take(settings.get("kernel", "kernel8.img"))
    initrd = take(settings["initramfs"]) if "initramfs" in settings else None
    dtb = take(settings.get("device_tree", RASPI_DTB))
    for node in RASPI_ABSENT_NODES:
        run("fdtput", "-t", "s", dtb, node, "status", "disabled")
    for node, props in RASPI_FIRMWARE_GPIO_PROPERTIES.items():
        run("fdtput", "-d", dtb, node, *props)
    args = [a for a in fat_read(img, boot_part, "/cmdline.txt").split()
            if not a.startswith("console=")]
    return PiBootFiles(kernel=kernel, initrd=initrd, dtb=dtb,
                       cmdline=" ".join([*args, f"console={console}"]))


def boot_raspi4b(img: Path, workdir: Path, timeout: float = 900, name: str = "boot") -> Boot:
    """Boot a Raspberry Pi SD card image under qemu-system-aarch64 -M raspi4b (4
    Cortex-A72, 2 GiB, the whole image as the SD card) with the kernel, initramfs,
    device tree and command line of its own boot partition (pi_boot_files), until
    the guest powers down or the timeout passes; the console (the PL011, QEMU's
    first serial port) is written to WORKDIR/NAME.console.log. The image file's
    size must be a power of two (QEMU's SD card model): see copy_image's
    grow_to_power_of_two. The model has no Ethernet (neither GENET nor the USB
    bridge behind PCIe), so the guest has no network, as with -nic none on virt."""
    console = workdir / f"{name}.console.log"
    files = pi_boot_files(img, workdir)
    cmd = [
        "qemu-system-aarch64", "-M", RASPI_MACHINE,
        "-kernel", str(files.kernel),
        *(["-initrd", str(files.initrd)] if files.initrd else []),
        "-dtb", str(files.dtb),
        "-append", files.cmdline,
        "-drive", f"if=sd,format=raw,file={img}",
        "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}", "-serial", "null",
        "-no-reboot",
    ]
    return _run_qemu(cmd, console, timeout)


def copy_image(src: Path, dst: Path, grow_bytes: int = 0,
               grow_to_power_of_two: bool = False) -> Path:
    """A sparse copy of an image (each boot gets its own), optionally grown by
    GROW_BYTES, and then to the next power of two (an SD card for QEMU)."""
    run("cp", "--sparse=always", src, dst)
    size = dst.stat().st_size + grow_bytes
    if grow_to_power_of_two:
        size = 1 << (size - 1).bit_length()
    if size != dst.stat().st_size:
        with open(dst, "r+b") as f:
            f.truncate(size)
    return dst

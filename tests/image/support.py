"""Helpers for the image tests: partition tables, FAT (mtools) and ext4 (debugfs)
access to a disk image file without loop devices, and booting it under QEMU."""

from __future__ import annotations

import json
import os
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

def qemu_available() -> str | None:
    """Why a boot test cannot run here, or None."""
    if not shutil.which("qemu-system-aarch64"):
        return "qemu-system-aarch64 missing (apt-get install qemu-system-arm)"
    if not (AAVMF_CODE.exists() or QEMU_EFI.exists()):
        return "no arm64 UEFI firmware (apt-get install qemu-efi-aarch64)"
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
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    timed_out = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        _, err = proc.communicate()
    seconds = time.monotonic() - t0
    text = console.read_text(errors="replace") if console.exists() else ""
    if proc.returncode not in (0, None) and not timed_out:
        text += f"\n[qemu exited {proc.returncode}: {err.decode(errors='replace')}]\n"
    return Boot(console=text, seconds=seconds, exit_code=proc.returncode, timed_out=timed_out)


def copy_image(src: Path, dst: Path, grow_bytes: int = 0) -> Path:
    """A sparse copy of an image (each boot gets its own), optionally grown."""
    run("cp", "--sparse=always", src, dst)
    if grow_bytes:
        with open(dst, "r+b") as f:
            f.truncate(dst.stat().st_size + grow_bytes)
    return dst

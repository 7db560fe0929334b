"""UDP sockets for the diode link: large buffers, GSO on send, GRO and drop counts on receive."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable

from ..schema import Address
from ._recvmmsg import BatchReceiver

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h: GSO segment size (send)
UDP_GRO = 104  # linux/udp.h: coalesce on receive, segment size in cmsg
SO_RXQ_OVFL = 40
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
_U16 = struct.Struct("=H")


def _read_sysctl(name: str) -> int | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError):
        return None


def set_buffer(sock: socket.socket, receive: bool, wanted: int,
               warn: Callable[..., None]) -> int:
    """Ask for a wanted-size buffer, forcing past the sysctl limit when allowed; warn if capped."""
    opt, force, limit = ((socket.SO_RCVBUF, SO_RCVBUFFORCE, "net.core.rmem_max") if receive
                         else (socket.SO_SNDBUF, SO_SNDBUFFORCE, "net.core.wmem_max"))
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, wanted)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, opt, wanted)
    got = sock.getsockopt(socket.SOL_SOCKET, opt) // 2  # the kernel reports double
    if got < wanted:
        cap = _read_sysctl(limit)
        event = "rmem_max_low" if receive else "wmem_max_low"
        warn("warning", event,
             f"{limit}={cap} is below socket_buffer_bytes={wanted}; the kernel capped the "
             f"{'receive' if receive else 'send'} buffer at {got} bytes (raise {limit} "
             f"or give ddc CAP_NET_ADMIN)", limit=cap, wanted=wanted, got=got)
    return got


def _family(addr: Address) -> int:
    return socket.AF_INET6 if addr.ipv6 else socket.AF_INET


class LinkSender:
    """Sends datagrams to the peer, in GSO batches where the kernel supports UDP_SEGMENT."""

    def __init__(self, bind: Address, peer: Address, buffer_bytes: int, gso: bool,
                 warn: Callable[..., None]):
        self.peer = peer.tuple
        self.sock = socket.socket(_family(peer), socket.SOCK_DGRAM)
        set_buffer(self.sock, False, buffer_bytes, warn)
        self.sock.bind(bind.tuple)
        self.sock.connect(self.peer)
        self.gso = gso and self._probe_gso()
        self.send_errors = 0
        self._warn = warn

    def _probe_gso(self) -> bool:
        try:
            self.sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
            return True
        except OSError:
            return False

    def send(self, datagrams: list[bytes]) -> None:
        if not self.gso:
            for d in datagrams:
                self._send_one(d)
            return
        i, n = 0, len(datagrams)
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            limit = min(n, i + GSO_MAX_SEGMENTS, i + max(1, GSO_MAX_BYTES // size))
            while j < limit and len(datagrams[j]) == size:
                j += 1
            # The last segment of a GSO batch may be shorter; take one if it is next.
            if j < limit and len(datagrams[j]) < size:
                j += 1
            if j - i == 1:
                self._send_one(datagrams[i])
            else:
                self._send_gso(datagrams[i:j], size)
            i = j

    def _send_gso(self, batch: list[bytes], size: int) -> None:
        try:
            self.sock.sendmsg([b"".join(batch)], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))])
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                # The path cannot segment (no checksum offload, say): plain sends from now on.
                self.gso = False
                self._warn("warning", "gso_disabled",
                           f"UDP GSO failed ({exc.strerror}); sending datagrams one by one")
                for d in batch:
                    self._send_one(d)
            else:
                self._count_error(exc)

    def _send_one(self, d: bytes) -> None:
        try:
            self.sock.send(d)
        except OSError as exc:
            self._count_error(exc)

    def _count_error(self, exc: OSError) -> None:
        # ECONNREFUSED: an ICMP came back (no diode in a test set-up); ENOBUFS: qdisc full.
        # Either way the datagram did not leave; the receiver's accounting reports the loss.
        self.send_errors += 1

    def close(self) -> None:
        self.sock.close()


class LinkReceiver:
    """Receives datagrams, many per system call (recvmmsg, each message possibly a UDP
    GRO run of datagrams); counts kernel drops."""

    def __init__(self, bind: Address, buffer_bytes: int, gro: bool,
                 warn: Callable[..., None], timeout: float = 0.02):
        self.sock = socket.socket(_family(bind), socket.SOCK_DGRAM)
        set_buffer(self.sock, True, buffer_bytes, warn)
        self.gro = False
        if gro:
            try:
                self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            self.counts_drops = True
        except OSError:
            self.counts_drops = False
        self.sock.bind(bind.tuple)
        self.timeout = timeout
        # 32 buffers of 64 KiB: a GRO run can fill one; without GRO, 32 datagrams a call.
        self._batch = BatchReceiver(self.sock.fileno(), 32, 65536)

    @property
    def address(self) -> tuple:
        return self.sock.getsockname()

    @property
    def kernel_drops(self) -> int:
        return self._batch.kernel_drops

    def receive(self, wait: bool = True) -> list[bytes]:
        """The datagrams of one receive call, in order; [] when none came within the
        timeout (wait) or none is queued right now (not wait)."""
        return self._batch.receive(self.timeout if wait else 0.0)

    def close(self) -> None:
        self.sock.close()

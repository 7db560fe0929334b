"""UDP channel: each datagram received on the ingress is one record; the egress re-emits it.

This is how operators forward syslog, StatsD or any datagram protocol across the diode.
Positions are per session and dense (the n-th datagram of the session is offset n), so
a loss names exactly which datagrams of the stream went missing.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

from ..protocol.heartbeat import KIND_COUNTER, Metric
from ..protocol.records import Record
from ..schema import Address, address, boolean, option, options_of, parse_options
from .base import ChannelContext, Emit, Sink, Source

ROLES = ("ingress", "egress")
SO_RXQ_OVFL = 40
_U32 = struct.Struct("=I")


@dataclass(frozen=True, kw_only=True)
class SourceOptions:
    """[channel.udp] on the ingress."""
    listen: Address = option(parse=address())
    include_source: bool = option(False, parse=boolean)  # a "source" header: "host:port"


@dataclass(frozen=True, kw_only=True)
class SinkOptions:
    """[channel.udp] on the egress."""
    target: Address = option(parse=address())


def validate(options: dict, role: str) -> list[tuple[str, str]]:
    return parse_options(SourceOptions if role == "ingress" else SinkOptions, options)[1]


def _socket_for(addr) -> socket.socket:
    family = socket.AF_INET6 if addr.ipv6 else socket.AF_INET
    return socket.socket(family, socket.SOCK_DGRAM)


class UdpSource(Source):
    def __init__(self, options: dict, ctx: ChannelContext):
        self.ctx = ctx
        # The options object holds the values (no copy of each into an attribute).
        self.opts = options_of(SourceOptions, options)
        self.sock = _socket_for(self.opts.listen)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ctx.socket_buffer_bytes)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        except OSError:
            pass
        self.sock.bind(self.opts.listen.tuple)
        self.sock.settimeout(0.2)
        self.received = 0
        self.kernel_drops = 0

    def run(self, emit: Emit, stop: threading.Event) -> None:
        seq = 0
        sock = self.sock
        include = self.opts.include_source
        while not stop.is_set():
            try:
                data, anc, _, src = sock.recvmsg(65536, 64)
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                raise
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    drops = _U32.unpack_from(value)[0]
                    if drops > self.kernel_drops:
                        self.ctx.log_event(
                            "warning", "source_kernel_drops",
                            f"channel {self.ctx.name}: the kernel dropped "
                            f"{drops - self.kernel_drops} datagrams before ddc read them "
                            f"(socket buffer full); they never entered the link",
                            count=drops - self.kernel_drops)
                        self.kernel_drops = drops
            seq += 1
            self.received += 1
            headers: list[tuple[str, bytes | None]] = (
                [("source", f"{src[0]}:{src[1]}".encode())] if include else [])
            emit([Record(value=data, headers=headers, offset=seq, partition=0)])

    def metrics(self) -> list[Metric]:
        tags = (("channel", self.ctx.name),)
        return [Metric("udp.datagrams_received", self.received, KIND_COUNTER, tags),
                Metric("udp.kernel_drops", self.kernel_drops, KIND_COUNTER, tags)]

    def close(self) -> None:
        self.sock.close()


class UdpSink(Sink):
    def __init__(self, options: dict, ctx: ChannelContext):
        self.ctx = ctx
        self.addr = options_of(SinkOptions, options).target
        self.sock = _socket_for(self.addr)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ctx.socket_buffer_bytes)
        self.sent = 0
        self.errors = 0

    def write(self, record: Record) -> None:
        try:
            self.sock.sendto(record.value or b"", self.addr.tuple)
            self.sent += 1
        except OSError as exc:
            # Nothing listens (ECONNREFUSED from an earlier ICMP) or the datagram is too
            # large for the target: the record is lost on this side, so say so.
            self.errors += 1
            self.ctx.log_event("error", "sink_send_failed",
                               f"channel {self.ctx.name}: could not send datagram "
                               f"{record.offset} to {self.addr}: {exc.strerror}",
                               offset=record.offset)

    def close(self) -> None:
        self.sock.close()


def open_source(options: dict, ctx: ChannelContext) -> UdpSource:
    return UdpSource(options, ctx)


def open_sink(options: dict, ctx: ChannelContext) -> UdpSink:
    return UdpSink(options, ctx)

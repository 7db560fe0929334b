"""A TCP relay whose open connections can be frozen: a fault a client cannot see.

freeze() stops relaying on every connection open at that moment and keeps their sockets
open, as a stateful firewall or NAT that lost its state, or a peer that vanished without a
reset, leaves them: requests go out and nothing ever comes back. Connections opened later
are relayed normally. librdkafka only notices a frozen connection when a request on it
times out (socket.timeout.ms, 60 s by default).
"""

from __future__ import annotations

import selectors
import socket
import threading


class FreezableProxy:
    def __init__(self, listen_port: int, upstream: tuple[str, int]):
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
        self.server.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.server, selectors.EVENT_READ, None)
        self._peer: dict[socket.socket, socket.socket] = {}
        self._frozen: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="freezable-proxy", daemon=True)

    def __enter__(self) -> FreezableProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in list(self._peer) + [self.server]:
            s.close()

    def freeze(self) -> int:
        """Freeze every open connection; returns how many."""
        with self._lock:
            self._frozen |= set(self._peer)
            return len(self._peer) // 2

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.1):
                sock = key.fileobj
                if sock is self.server:
                    self._accept()
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    frozen = sock in self._frozen
                if frozen:
                    if not data:  # the client gave up on it: so do we, silently
                        self._sel.unregister(sock)
                    continue  # swallowed: nothing reaches the other side any more
                if not data:
                    self._drop(sock)
                    continue
                try:
                    self._peer[sock].sendall(data)
                except OSError:
                    self._drop(sock)

    def _accept(self) -> None:
        try:
            client, _ = self.server.accept()
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            return
        for s in (client, upstream):
            s.setblocking(True)
            s.settimeout(None)
        self._peer[client], self._peer[upstream] = upstream, client
        for s in (client, upstream):
            self._sel.register(s, selectors.EVENT_READ, None)

    def _drop(self, sock: socket.socket) -> None:
        other = self._peer.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peer.pop(s, None)
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

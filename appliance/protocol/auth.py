"""Packet authentication: AES-256-GCM with a per-session key derived from the pre-shared key.

Each ingress run picks a random 64-bit session id; both sides derive the session key
with HKDF-SHA256(psk, salt=session id, info="ddc-link-v1" + key id). The GCM nonce is
the 64-bit packet number, which the sender never repeats within a session, so a
(key, nonce) pair is never reused even though the pre-shared key lives for years.

Two modes: "encrypt" (payload encrypted and authenticated, header authenticated as
associated data) and "authenticate" (payload in clear, header and payload authenticated:
GMAC). Both append a 16-byte tag. The cipher runs in _native.c (OpenSSL EVP, keyed
once per session); HKDF stays here: it runs once per session.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._native import Aead
from .errors import AuthenticationError, ProtocolError
from .wire import MAGIC, OVERHEAD, TYPE_DATA, TYPE_HEARTBEAT, VERSION, Header

_MAGIC_VERSION = MAGIC + bytes([VERSION])
_TYPES = (TYPE_DATA, TYPE_HEARTBEAT)

KEY_SIZE = 32


def derive_session_key(psk: bytes, key_id: int, session_id: int) -> Aead:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=session_id.to_bytes(8, "big"),
        info=b"ddc-link-v1" + key_id.to_bytes(2, "big"),
    )
    return Aead(hkdf.derive(psk))


def new_session_id(epoch_ms: int) -> int:
    """A session id: 48-bit epoch (ms; the ingress keeps it increasing across restarts,
    whatever its clock does) and 16 random bits. The egress only ever moves to a session
    with a later epoch, so a captured datagram of an older session cannot take the link
    over, not even after an egress restart (it persists the epoch it is at)."""
    if not 0 < epoch_ms < 1 << 48:
        raise ValueError(f"session epoch {epoch_ms} out of range")
    return (epoch_ms << 16) | secrets.randbits(16)


def session_epoch(session_id: int) -> int:
    return session_id >> 16


def parse_key(text: str) -> bytes:
    """A key file holds 64 hex digits (256 bits); blank lines and # comments are ignored."""
    lines = [ln.strip() for ln in text.splitlines()]
    body = "".join(ln for ln in lines if ln and not ln.startswith("#"))
    try:
        key = bytes.fromhex(body)
    except ValueError:
        raise ValueError("key file must hold 64 hexadecimal digits") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"key file holds {len(key)} bytes, expected {KEY_SIZE} (64 hex digits)")
    return key


def format_key(key: bytes) -> str:
    return ("# ddc link key (AES-256), keep secret; same file on ingress and egress\n"
            + key.hex() + "\n")


class Sealer:
    """Authenticates (and optionally encrypts) outgoing datagrams for one session."""

    def __init__(self, psk: bytes, key_id: int, session_id: int, encrypt: bool = True):
        self.key_id = key_id
        self.session_id = session_id
        self.encrypt = encrypt
        self._aead = derive_session_key(psk, key_id, session_id)

    def seal(self, header: bytes, payload: bytes | memoryview) -> bytes:
        """header | payload (encrypted if the header says so) | tag; the nonce is the
        header's packet number, which the caller never repeats within the session."""
        return self._aead.seal(header, payload)

    def seal_group(self, blocks: list[tuple], type_byte: int, packet_number: int,
                   symbol_size: int) -> list[bytes]:
        """FEC-encode and seal an interleave group in one call: the datagrams of
        blocks [(channel_id, block_seq, k, n, data), ...], symbol 0 of each block, then
        symbol 1, ..., numbered from packet_number."""
        return self._aead.seal_group(blocks, type_byte, self.key_id, self.session_id,
                                     packet_number, symbol_size)


class Opener:
    """Verifies incoming datagrams; nothing else reads a datagram before it passes here.

    Holds the pre-shared keys by key id (several during a rotation) and a small cache
    of derived session keys.
    """

    def __init__(self, keys: dict[int, bytes], cache_size: int = 16):
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = dict(keys)
        self._cache: OrderedDict[tuple[int, int], Aead] = OrderedDict()
        self._cache_size = cache_size

    def session_aead(self, key_id: int, session_id: int) -> Aead:
        cache_key = (key_id, session_id)
        aead = self._cache.get(cache_key)
        if aead is None:
            psk = self._keys.get(key_id)
            if psk is None:
                raise AuthenticationError(f"unknown key id {key_id}")
            aead = derive_session_key(psk, key_id, session_id)
            self._cache[cache_key] = aead
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(cache_key)
        return aead

    def open(self, datagram: bytes) -> tuple[Header, bytes]:
        """Return (header, payload) or raise ProtocolError/AuthenticationError."""
        if len(datagram) < OVERHEAD or datagram[:3] != _MAGIC_VERSION:
            raise ProtocolError("not a ddc v1 datagram")
        # Only the key id and session id are read before the MAC is checked: they pick
        # the key. Nothing else is looked at until the tag has verified.
        aead = self.session_aead(int.from_bytes(datagram[4:6]), int.from_bytes(datagram[8:16]))
        opened = aead.open(datagram, Header)
        if opened is None:
            raise AuthenticationError("MAC check failed")
        if opened[0].packet_type not in _TYPES:
            raise ProtocolError(f"unknown packet type {opened[0].packet_type}")
        return opened

"""Packet authentication: AES-256-GCM with a per-session key derived from the pre-shared key.

Each ingress run picks a random 64-bit session id; both sides derive the session key
with HKDF-SHA256(psk, salt=session id, info="ddc-link-v1" + key id). The GCM nonce is
the 64-bit packet number, which the sender never repeats within a session, so a
(key, nonce) pair is never reused even though the pre-shared key lives for years.

Two modes: "encrypt" (payload encrypted and authenticated, header authenticated as
associated data) and "authenticate" (payload in clear, header and payload authenticated:
GMAC). Both append a 16-byte tag.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import AuthenticationError, ProtocolError
from .wire import (
    HEADER_SIZE,
    MAGIC,
    OVERHEAD,
    TAG_SIZE,
    TYPE_DATA,
    TYPE_HEARTBEAT,
    VERSION,
    Header,
    parse_fields,
)

_MAGIC_VERSION = MAGIC + bytes([VERSION])
_TYPES = (TYPE_DATA, TYPE_HEARTBEAT)

KEY_SIZE = 32
_NONCE_PAD = b"\x00\x00\x00\x00"


def derive_session_key(psk: bytes, key_id: int, session_id: int) -> AESGCM:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=session_id.to_bytes(8, "big"),
        info=b"ddc-link-v1" + key_id.to_bytes(2, "big"),
    )
    return AESGCM(hkdf.derive(psk))


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

    def seal(self, header: bytes, packet_number: int, payload: bytes | memoryview) -> bytes:
        nonce = _NONCE_PAD + packet_number.to_bytes(8, "big")
        if self.encrypt:
            return header + self._aead.encrypt(nonce, payload, header)
        return header + payload + self._aead.encrypt(nonce, b"", header + payload)


class Opener:
    """Verifies incoming datagrams; nothing else reads a datagram before it passes here.

    Holds the pre-shared keys by key id (several during a rotation) and a small cache
    of derived session keys.
    """

    def __init__(self, keys: dict[int, bytes], cache_size: int = 16):
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = dict(keys)
        self._cache: OrderedDict[tuple[int, int], AESGCM] = OrderedDict()
        self._cache_size = cache_size

    def _session_aead(self, key_id: int, session_id: int) -> AESGCM:
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
        h = parse_fields(datagram)
        # Only the key id and session id are used before the MAC is checked: they pick
        # the key. Nothing else in h is looked at until decrypt() has verified the tag.
        aead = self._cache.get((h.key_id, h.session_id)) or \
            self._session_aead(h.key_id, h.session_id)
        nonce = _NONCE_PAD + datagram[16:24]
        try:
            if h.encrypted:
                payload = aead.decrypt(nonce, datagram[HEADER_SIZE:], datagram[:HEADER_SIZE])
            else:
                payload = datagram[HEADER_SIZE:-TAG_SIZE]
                aead.decrypt(nonce, datagram[-TAG_SIZE:], datagram[:-TAG_SIZE])
        except InvalidTag:
            raise AuthenticationError("MAC check failed") from None
        if h.packet_type not in _TYPES:
            raise ProtocolError(f"unknown packet type {h.packet_type}")
        return h, payload

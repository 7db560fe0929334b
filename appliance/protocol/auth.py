"""Packet authentication: AES-256-GCM with a per-session key derived from the pre-shared key.

Each ingress run picks a fresh 128-bit session id: a 64-bit epoch (ms; the ingress keeps
it increasing across its restarts, whatever its clock does) and 64 random bits, so two
sessions never share an id and with it a key: a collision of the random half within one
epoch millisecond is negligible. Both sides derive the session key with
HKDF-SHA256(psk, salt = session id, info = "ddc-link-v2" || key id || link id), so two
links that share a pre-shared key (but not a link id) cannot take each other over. The
GCM nonce is the 64-bit packet number, which the sender never repeats within a session,
so a (key, nonce) pair is never reused even though the pre-shared key lives for years.

Two modes: "encrypt" (payload encrypted and authenticated, header authenticated as
associated data) and "authenticate" (payload in clear, header and payload authenticated:
GMAC). Both append a 16-byte tag; the egress accepts only the mode it is configured for.
The cipher runs in _native.c (OpenSSL EVP, keyed once per session); HKDF stays here: it
runs once per session, and the Opener bounds how often a datagram may ask for it.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._native import Aead
from .wire import FLAG_ENCRYPTED, TYPE_DATA, TYPE_HEARTBEAT, session_bytes

KEY_SIZE = 32
KDF_INFO = b"ddc-link-v2"
EPOCH_SHIFT = 64  # session id = epoch << 64 | 64 random bits
MAX_EPOCH = (1 << 64) - 1
LINK_ID_MAX = 64


def derive_session_key(psk: bytes, key_id: int, session_id: int, link_id: str) -> Aead:
    link = link_id.encode()
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=session_bytes(session_id),
        info=KDF_INFO + key_id.to_bytes(2, "big") + bytes([len(link)]) + link,
    )
    return Aead(hkdf.derive(psk))


def new_session_id(epoch_ms: int) -> int:
    """A session id: the epoch (ms) and 64 random bits. The egress only ever moves to a
    session with a later epoch, so a captured datagram of an older session cannot take
    the link over, not even after an egress restart (it persists the session it is in)."""
    if not 0 < epoch_ms <= MAX_EPOCH:
        raise ValueError(f"session epoch {epoch_ms} out of range")
    return (epoch_ms << EPOCH_SHIFT) | secrets.randbits(EPOCH_SHIFT)


def session_epoch(session_id: int) -> int:
    return session_id >> EPOCH_SHIFT


def data_type_byte(encrypt: bool) -> int:
    """The type byte of a data symbol in this mode (the header authenticates it)."""
    return TYPE_DATA | (FLAG_ENCRYPTED if encrypt else 0)


class RateLimit:
    """At most `burst` events at once and `rate` a second on average; the caller passes
    the time in (pure, like the rest of the protocol core)."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._stamp: float | None = None

    def allow(self, now: float, reserve: float = 0.0) -> bool:
        """One event now? Only if `reserve` tokens remain after it (kept for others)."""
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens - 1 < reserve:
            return False
        self._tokens -= 1
        return True


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

    def __init__(self, psk: bytes, key_id: int, session_id: int, encrypt: bool = True,
                 link_id: str = ""):
        self.key_id = key_id
        self.session_id = session_id
        self.encrypt = encrypt
        self._session = session_bytes(session_id)
        self._aead = derive_session_key(psk, key_id, session_id, link_id)

    def seal(self, header: bytes, payload: bytes | memoryview) -> bytes:
        """header | payload (encrypted if the header says so) | tag; the nonce is the
        header's packet number, which the caller never repeats within the session."""
        return self._aead.seal(header, payload)

    def seal_group(self, blocks: list[tuple[int, int, int, int, bytes]], packet_number: int,
                   symbol_size: int) -> list[bytes]:
        """FEC-encode and seal an interleave group in one call: the datagrams of
        blocks [(channel_id, block_seq, k, n, data), ...], symbol 0 of each block, then
        symbol 1, ..., numbered from packet_number."""
        return self._aead.seal_group(blocks, data_type_byte(self.encrypt), self.key_id,
                                     self._session, packet_number, symbol_size)


# HKDF for sessions the egress has not seen, from datagrams whose tag is not checked
# yet: each costs tens of microseconds, so a flood of made-up session ids must not buy
# one per datagram. A genuine new session sends thousands of datagrams a second and
# needs one derivation that verifies; then its key is cached. So at most DERIVE_RATE
# derivations a second, and a session id seen for the first time may only use the upper
# half of the budget: made-up ids rarely repeat, so a flood of them drains only that
# half, and the lower half stays for an id that shows up again, as a genuine session's
# does with its next datagram.
DERIVE_RATE = 50.0  # derivations a second, on average
DERIVE_BURST = 20
CANDIDATES = 256  # session ids seen once, remembered for their second sighting


class Opener:
    """The keys of the egress: the pre-shared keys by key id (several during a rotation),
    the mode it accepts, its link id, and a small cache of derived session keys.

    Nothing reads a datagram before it passes here except the fields that pick the key
    (key id, session id) and the cheap shape checks the decoder makes first."""

    def __init__(self, keys: dict[int, bytes], *, encrypt: bool = True, link_id: str = "",
                 cache_size: int = 16, derive_rate: float = DERIVE_RATE,
                 derive_burst: float = DERIVE_BURST):
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = dict(keys)
        self.encrypt = encrypt
        self.link_id = link_id
        self.data_type = data_type_byte(encrypt)
        # The two type bytes this egress accepts; anything else is another mode or junk.
        self.type_bytes = frozenset((self.data_type,
                                     TYPE_HEARTBEAT | (FLAG_ENCRYPTED if encrypt else 0)))
        self._cache: OrderedDict[tuple[int, int], Aead] = OrderedDict()
        self._cache_size = cache_size
        self._derive_limit = RateLimit(derive_rate, derive_burst)
        self._candidates: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.derivations = 0

    def knows(self, key_id: int) -> bool:
        return key_id in self._keys

    def session_aead(self, key_id: int, session_id: int, now: float | None = None) -> Aead | None:
        """The session key, from the cache or derived. With `now` (the path for datagrams
        not verified yet), a derivation happens only for a session id seen before and
        within the rate limit; None otherwise."""
        cache_key = (key_id, session_id)
        aead = self._cache.get(cache_key)
        if aead is not None:
            self._cache.move_to_end(cache_key)
            return aead
        psk = self._keys.get(key_id)
        if psk is None:
            return None
        if now is not None:
            limit, candidates = self._derive_limit, self._candidates
            if cache_key in candidates:
                if not limit.allow(now):
                    return None
                del candidates[cache_key]
            elif not limit.allow(now, reserve=limit.burst / 2):
                candidates[cache_key] = None
                if len(candidates) > CANDIDATES:
                    candidates.popitem(last=False)
                return None
        aead = derive_session_key(psk, key_id, session_id, self.link_id)
        self.derivations += 1
        self._cache[cache_key] = aead
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return aead

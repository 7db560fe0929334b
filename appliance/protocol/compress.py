"""Block compression (zstd), sans I/O: a block's chunk is compressed before FEC and
encryption, so FEC and the loss accounting work on the wire's symbols as before.

The zstd frame always carries its content size; the egress refuses a frame that does
not, or that says it is larger than the bound (`link.compression_max_block_bytes`),
before it decompresses anything: no decompression bomb. The codec is the `zstandard`
package (a dependency, in the wheelhouse for amd64 and arm64). Python 3.14's standard
library `compression.zstd` is not used yet: Debian 13 has Python 3.13, and nothing here
tests that path. Without the package an ingress configured for zstd is refused by the
config check, and an egress drops compressed blocks as malformed, saying why.
"""

from __future__ import annotations

from .errors import ProtocolError

try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - the package is a dependency
    _zstd = None  # type: ignore[assignment]  # typed as the module: checked before use

MAX_LEVEL = 22
DEFAULT_MAX_BLOCK_BYTES = 4 * 1024 * 1024


class BlockTooLarge(ProtocolError):
    """A compressed block that says it expands past this egress's bound: malformed, and
    usually a pair set up differently (the ingress's compression_max_block_bytes is
    larger), which the decoder reports as a rate-limited peer mismatch."""

    def __init__(self, size: int, bound: int):
        super().__init__(f"compressed block would expand to {size} bytes, above "
                         f"compression_max_block_bytes {bound}")
        self.size = size
        self.bound = bound


def available() -> bool:
    return _zstd is not None


class Compressor:
    def __init__(self, level: int):
        if _zstd is None:
            raise RuntimeError("zstd compression needs the zstandard package")
        self._c = _zstd.ZstdCompressor(level=level, write_content_size=True)

    def compress(self, data: bytes | memoryview) -> bytes:
        return self._c.compress(data)


class Decompressor:
    def __init__(self, bound: int):
        self.bound = bound
        if _zstd is not None:
            window = 1 << max(20, (bound - 1).bit_length())
            self._d = _zstd.ZstdDecompressor(max_window_size=min(window, 1 << 31))

    def decompress(self, data: bytes | memoryview) -> bytes:
        """The chunk a compressed block carries, or ProtocolError (counted malformed)."""
        if _zstd is None:
            raise ProtocolError("compressed block, but this egress has no zstd "
                                "(install the zstandard package)")
        try:
            size = _zstd.frame_content_size(data)
        except _zstd.ZstdError as exc:
            raise ProtocolError(f"compressed block: {exc}") from None
        if size < 0:
            raise ProtocolError("compressed block does not say its size")
        if size > self.bound:
            raise BlockTooLarge(size, self.bound)
        try:
            out = self._d.decompress(data, max_output_size=self.bound)
        except _zstd.ZstdError as exc:
            raise ProtocolError(f"compressed block does not decompress: {exc}") from None
        if len(out) != size:
            raise ProtocolError("compressed block expands to another size than it says")
        return out

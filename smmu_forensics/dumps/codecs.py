"""makedumpfile's per-page codecs, each bounded to one page of output.

Flag values from makedumpfile ``diskdump_mod.h``: ZLIB 0x01, LZO 0x02, SNAPPY 0x04, ZSTD 0x20.
Maintained libraries do the work: python-isal's zlib (Intel ISA-L inflate, 1.6x the stdlib's
speed on the real captures; stdlib zlib if isal is missing), lzallright (LZO1X), cramjam (snappy
raw), zstandard.  A page that decompresses to anything but exactly ``page_size`` bytes is corrupt.
"""

from __future__ import annotations

import io
from collections.abc import Callable

try:  # Intel ISA-L inflate: same API as zlib, much faster
    from isal import isal_zlib as zlib
except ImportError:  # pragma: no cover
    import zlib  # type: ignore[no-redef]

from smmu_forensics.errors import CorruptPage

DUMP_DH_COMPRESSED_ZLIB = 0x01  # diskdump_mod.h
DUMP_DH_COMPRESSED_LZO = 0x02
DUMP_DH_COMPRESSED_SNAPPY = 0x04
DUMP_DH_COMPRESSED_INCOMPLETE = 0x08
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20
COMPRESSED_MASK = (
    DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_LZO | DUMP_DH_COMPRESSED_SNAPPY | DUMP_DH_COMPRESSED_ZSTD
)

CODEC_NAMES = {
    DUMP_DH_COMPRESSED_ZLIB: "zlib",
    DUMP_DH_COMPRESSED_LZO: "lzo",
    DUMP_DH_COMPRESSED_SNAPPY: "snappy",
    DUMP_DH_COMPRESSED_ZSTD: "zstd",
}


def codec_name(flags: int) -> str:
    names = [n for bit, n in CODEC_NAMES.items() if flags & bit]
    return "+".join(names) if names else "none"


def _zlib(data: bytes, n: int) -> bytes:
    # bounded: at most n + 1 bytes come out, whatever the stream claims
    return zlib.decompressobj().decompress(data, n + 1)


_LZO: list = []


def _lzo_lib() -> tuple:
    """(compressor, error type) of lzallright, created once."""
    if not _LZO:
        import lzallright

        _LZO[:] = [lzallright.LZOCompressor(), lzallright.LZOError]
    return _LZO[0], _LZO[1]


#: LZO1X expands at most 255x and lzallright's size hint is not a cap: a stored page larger than
#: this (no architecture's page is; arm64's largest is 64 KiB) is refused rather than decoded
MAX_LZO_INPUT = 256 << 10


def _lzo(data: bytes, n: int) -> bytes:
    if len(data) > MAX_LZO_INPUT:
        raise CorruptPage(f"LZO page of {len(data)} bytes: more than {MAX_LZO_INPUT} is not decoded (it could expand 255-fold)")
    comp, err = _lzo_lib()
    try:
        # LZO1X output is bounded by the input (<= MAX_LZO_INPUT here) x 255
        return comp.decompress(data, output_size_hint=n)
    except err as exc:
        raise CorruptPage(f"LZO error {exc}") from None


def _snappy(data: bytes, n: int) -> bytes:
    import cramjam

    declared = int(cramjam.snappy.decompress_raw_len(data))
    if declared != n:
        raise CorruptPage(f"snappy page declares {declared} bytes, expected {n}")
    buf = bytearray(n)
    got = cramjam.snappy.decompress_raw_into(data, buf)
    return bytes(buf[:got])


_ZSTD: list = []


def _zstd(data: bytes, n: int) -> bytes:
    if not _ZSTD:
        import zstandard

        _ZSTD.append(zstandard.ZstdDecompressor())
    # a stream reader never allocates what the frame header claims: at most n + 1 bytes
    return _ZSTD[0].stream_reader(io.BytesIO(data)).read(n + 1)


_DECODERS = {
    DUMP_DH_COMPRESSED_ZLIB: _zlib,
    DUMP_DH_COMPRESSED_LZO: _lzo,
    DUMP_DH_COMPRESSED_SNAPPY: _snappy,
    DUMP_DH_COMPRESSED_ZSTD: _zstd,
}


def fast_decoders(page_size: int) -> dict[int, Callable[[bytes | memoryview], bytes]]:
    """Per-flags decoders for a hot path: each returns the page or raises; the caller checks the
    length and falls back to :func:`decompress_page` (which says what is wrong) on any surprise."""
    comp, _ = _lzo_lib()

    def inflate(d: bytes | memoryview) -> bytes:
        return zlib.decompressobj().decompress(d, page_size + 1)

    def unlzo(d: bytes | memoryview) -> bytes:
        if len(d) > MAX_LZO_INPUT:
            return b""  # the general path says why
        return comp.decompress(d, output_size_hint=page_size)

    return {0: bytes, DUMP_DH_COMPRESSED_ZLIB: inflate, DUMP_DH_COMPRESSED_LZO: unlzo}


def decompress_page(flags: int, data: bytes | memoryview, page_size: int) -> bytes:
    """Decode one stored page; raise :class:`CorruptPage` unless it yields ``page_size`` bytes."""
    codec = flags & COMPRESSED_MASK
    if codec == 0:
        out = bytes(data)
    else:
        fn = _DECODERS.get(codec)
        if fn is None:
            raise CorruptPage(f"unknown or mixed compression flags {flags:#x}")
        try:
            out = fn(data, page_size)  # type: ignore[arg-type]
        except CorruptPage:
            raise
        except Exception as exc:  # each library has its own error types
            raise CorruptPage(f"{codec_name(codec)} decompression failed: {exc}") from None
        if type(out) is not bytes:
            out = bytes(out)
    if len(out) != page_size:
        more = "more than" if len(out) > page_size else f"{len(out)} bytes, not"
        raise CorruptPage(f"page decompresses to {more} {page_size} bytes")
    return out

"""makedumpfile's per-page codecs, each bounded to one page of output.

Flag values from makedumpfile ``diskdump_mod.h``: ZLIB 0x01, LZO 0x02, SNAPPY 0x04, ZSTD 0x20.
Maintained libraries do the work: zlib (stdlib), lzallright (LZO1X), cramjam (snappy raw),
zstandard.  A page that decompresses to anything but exactly ``page_size`` bytes is corrupt.
"""

from __future__ import annotations

import io
import zlib

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
    d = zlib.decompressobj()
    out = d.decompress(data, n + 1)
    return out


def _lzo(data: bytes, n: int) -> bytes:
    import lzallright

    try:
        return bytes(lzallright.LZOCompressor().decompress(data, output_size_hint=n))
    except lzallright.LZOError as exc:
        raise CorruptPage(f"LZO error {exc}") from None


def _snappy(data: bytes, n: int) -> bytes:
    import cramjam

    declared = int(cramjam.snappy.decompress_raw_len(data))
    if declared != n:
        raise CorruptPage(f"snappy page declares {declared} bytes, expected {n}")
    buf = bytearray(n)
    got = cramjam.snappy.decompress_raw_into(data, buf)
    return bytes(buf[:got])


def _zstd(data: bytes, n: int) -> bytes:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    return reader.read(n + 1)


_DECODERS = {
    DUMP_DH_COMPRESSED_ZLIB: _zlib,
    DUMP_DH_COMPRESSED_LZO: _lzo,
    DUMP_DH_COMPRESSED_SNAPPY: _snappy,
    DUMP_DH_COMPRESSED_ZSTD: _zstd,
}


def decompress_page(flags: int, data: bytes, page_size: int) -> bytes:
    """Decode one stored page; raise :class:`CorruptPage` unless it yields ``page_size`` bytes."""
    codec = flags & COMPRESSED_MASK
    if codec == 0:
        out = data
    else:
        fn = _DECODERS.get(codec)
        if fn is None:
            raise CorruptPage(f"unknown or mixed compression flags {flags:#x}")
        try:
            out = fn(data, page_size)
        except CorruptPage:
            raise
        except Exception as exc:  # each library has its own error types
            raise CorruptPage(f"{codec_name(codec)} decompression failed: {exc}") from None
    if len(out) != page_size:
        more = "more than" if len(out) > page_size else f"{len(out)} bytes, not"
        raise CorruptPage(f"page decompresses to {more} {page_size} bytes")
    return out

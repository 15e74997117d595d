"""The parts of a kdump-compressed file: header checks, the two bitmaps, the page descriptors.

See :mod:`.kdump` for the file layout; the layouts themselves are in :mod:`.structs`.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from smmu_forensics.dumps.source import ByteSource
from smmu_forensics.dumps.structs import KDUMP_SIGNATURES, DiskDumpHeader64, KdumpSubHeader64, PageDesc, compiled
from smmu_forensics.errors import DumpError

__all__ = ["Bitmap", "KdumpHeader", "KdumpPart", "parse_header", "is_kdump", "PAGE_DESC", "PD_SIZE"]

PAGE_DESC = compiled(PageDesc)  # offset, size, flags, page_flags: the hot path's view of PageDesc
PD_SIZE = PAGE_DESC.size  # 24
_unpack_pd = PAGE_DESC.unpack_from

MIN_BLOCK = 1 << 9
MAX_BLOCK = 1 << 20  # 1 MiB: no architecture has larger pages
#: bytes of bitmap processed per chunk (8 Mi PFNs)
BITMAP_CHUNK = 1 << 20
#: decompressed pages kept, in bytes
PAGE_CACHE_BYTES = 32 << 20
#: info counts zero/lost pages by scanning descriptors only below this many descriptors
MAX_DESC_SCAN = 1 << 23
DESC_SCAN_CHUNK = 1 << 20  # descriptors read at a time (24 MiB)
#: ranges() lists at most this many runs per bitmap (a pathological bitmap alternates every bit)
MAX_RUNS = 1 << 18
_POPCNT_LIST = [bin(i).count("1") for i in range(256)]
_POPCNT = np.array(_POPCNT_LIST, dtype=np.uint8)


def is_kdump(head: bytes) -> bool:
    return head[:8] in KDUMP_SIGNATURES


class Bitmap:
    """A bitmap in the file, read lazily in chunks, with rank (popcount before a bit)."""

    def __init__(self, src: ByteSource, offset: int, nbytes: int) -> None:
        self.src, self.offset, self.nbytes = src, offset, nbytes
        self._prefix: list[int] = [0]  # set bits before chunk k
        self._cache: dict[int, tuple[bytes, array]] = {}
        #: the first bit whose byte no writer put in the file (a flattened record that never came):
        #: from there on neither the bits nor the ranks (descriptor indexes) can be trusted
        gap = src.unwritten(offset, nbytes) if src.has_gaps else None
        self.first_unknown: int | None = (gap[0] - offset) * 8 if gap is not None else None
        self._data: np.ndarray | None | bool = False  # per chunk: may hold a set bit (not a file hole); False: not asked yet

    def _chunks_with_data(self) -> np.ndarray | None:
        """Which chunks hold file data: a sparse file's holes are zero bits, never read.  A kdump
        claiming max_mapnr 2^36 has 8 GiB bitmaps; in a sparse file they cost nothing to skip."""
        if self._data is False:
            ext = getattr(self.src, "data_extents", None)
            if ext is None:
                self._data = None
            else:
                has = np.zeros(-(-self.nbytes // BITMAP_CHUNK), dtype=bool)
                for off, size in ext(self.offset, self.nbytes):
                    has[(off - self.offset) // BITMAP_CHUNK : -(-(off + size - self.offset) // BITMAP_CHUNK)] = True
                self._data = has
        return self._data  # type: ignore[return-value]

    def _may_have_bits(self, k: int) -> bool:
        has = self._chunks_with_data()
        return has is None or k >= len(has) or bool(has[k])

    def _popcount(self, k: int) -> int:
        """Set bits in chunk ``k`` (0 without reading it when it is a file hole)."""
        if not self._may_have_bits(k):
            return 0
        hit = self._cache.get(k)
        if hit is not None:
            return hit[1][-1]
        arr = np.frombuffer(self._read(k), dtype=np.uint8)
        return int(_POPCNT[arr].sum(dtype=np.int64)) if arr.any() else 0

    def _read(self, k: int) -> bytes:
        """Chunk ``k``'s bytes; an unwritten tail reads as zero."""
        want = max(0, min(BITMAP_CHUNK, self.nbytes - k * BITMAP_CHUNK))
        raw = self.src.pread(self.offset + k * BITMAP_CHUNK, want)
        return raw if len(raw) == want else raw + bytes(want - len(raw))

    def _chunk(self, k: int) -> tuple[bytes, array]:
        hit = self._cache.get(k)
        if hit is not None:
            return hit
        raw = self._read(k)
        arr = np.frombuffer(raw, dtype=np.uint8)
        cum = array("q", np.concatenate(([0], np.cumsum(_POPCNT[arr], dtype=np.int64))).tobytes())
        if len(self._cache) >= 8:
            self._cache.clear()
        self._cache[k] = (raw, cum)
        return raw, cum

    def test(self, bit: int) -> bool:
        byte = bit >> 3
        if bit < 0 or byte >= self.nbytes:
            return False
        raw, _ = self._chunk(byte // BITMAP_CHUNK)
        return bool((raw[byte % BITMAP_CHUNK] >> (bit & 7)) & 1)

    def known(self, bit: int) -> bool:
        """Whether the byte holding ``bit`` is in the file (a clear bit there means clear; one past
        the end, or in a gap of a flattened stream, means nothing)."""
        byte = bit >> 3
        return 0 <= byte < self.nbytes and self.src.unwritten(self.offset + byte, 1) is None

    def rank(self, bit: int) -> int:
        """Number of set bits strictly before ``bit``."""
        bit = max(0, min(bit, self.nbytes * 8))
        byte = bit >> 3
        k = byte // BITMAP_CHUNK
        while len(self._prefix) <= k:
            self._prefix.append(self._prefix[-1] + self._popcount(len(self._prefix) - 1))
        raw, cum = self._chunk(k)
        i = byte % BITMAP_CHUNK
        n = self._prefix[k] + cum[i]
        if bit & 7 and i < len(raw):
            n += _POPCNT_LIST[raw[i] & ((1 << (bit & 7)) - 1)]
        return n

    def runs(self, nbits: int, max_runs: int = MAX_RUNS) -> list[tuple[int, int]]:
        """Runs ``[a, b)`` of set bits below ``nbits`` (at most ``max_runs``; ``truncated`` says so)."""
        out: list[tuple[int, int]] = []
        self.truncated = False
        nbytes = min(self.nbytes, (nbits + 7) // 8)
        for start in range(0, nbytes, BITMAP_CHUNK):
            if not self._may_have_bits(start // BITMAP_CHUNK):
                continue  # a hole of a sparse file: no set bit
            arr = np.frombuffer(self.src.pread(self.offset + start, min(BITMAP_CHUNK, nbytes - start)), dtype=np.uint8)
            if not arr.any():
                continue
            bits = np.unpackbits(arr, bitorder="little").astype(np.int8)
            base = start * 8
            edges = np.flatnonzero(np.diff(np.concatenate(([0], bits, [0]))))
            for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
                a, b = base + a, min(base + b, nbits)
                if a >= b:
                    continue
                if out and out[-1][1] == a:
                    out[-1] = (out[-1][0], b)
                else:
                    if len(out) >= max_runs:
                        self.truncated = True
                        return out
                    out.append((a, b))
        return out


@dataclass
class KdumpHeader:
    header_version: int
    utsname: list[str]
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    nr_cpus: int
    phys_base: int
    dump_level: int
    split: bool
    start_pfn: int
    end_pfn: int
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    offset_note: int
    size_note: int
    timestamp: int


def parse_header(src: ByteSource) -> KdumpHeader:
    """Parse and sanity-check the disk_dump_header and kdump_sub_header (64-bit little-endian)."""
    raw = src.pread_exact(0, DiskDumpHeader64.sizeof(), "kdump header")
    if not is_kdump(raw):
        raise DumpError(src.name, "not a kdump-compressed file")
    h = DiskDumpHeader64.parse(raw)
    if not 1 <= h.header_version <= 64:
        raise DumpError(
            src.name,
            f"kdump header_version {h.header_version}: only 64-bit little-endian kdump files are supported",
        )
    bs = h.block_size
    if bs < MIN_BLOCK or bs > MAX_BLOCK or bs & (bs - 1):
        raise DumpError(src.name, f"kdump block_size {bs} is not a power of two in [{MIN_BLOCK}, {MAX_BLOCK}]")
    if h.sub_hdr_size < 0 or h.sub_hdr_size > 1 << 20:
        raise DumpError(src.name, f"kdump sub_hdr_size {h.sub_hdr_size} blocks is implausible")
    if h.bitmap_blocks % 2 or h.bitmap_blocks == 0:
        raise DumpError(src.name, f"kdump bitmap_blocks {h.bitmap_blocks} must be even and non-zero")
    sub = None
    if h.header_version >= 1 and h.sub_hdr_size > 0:
        sub = KdumpSubHeader64.parse(src.pread_exact(bs, KdumpSubHeader64.sizeof(), "kdump sub-header"))
    max_mapnr = h.max_mapnr
    if sub is not None and h.header_version >= 6 and sub.max_mapnr_64:
        max_mapnr = sub.max_mapnr_64
    bitmap_bytes = h.bitmap_blocks // 2 * bs
    if max_mapnr > bitmap_bytes * 8:
        raise DumpError(
            src.name, f"kdump max_mapnr {max_mapnr:#x} exceeds what its bitmaps cover ({bitmap_bytes * 8:#x} pages)"
        )
    # makedumpfile writes only the bitmap bytes that cover max_mapnr (a --split part with no pages
    # ends inside its 2nd bitmap), so that is what must be in the file; descriptors past the end
    # of the file are lost pages, reported per page.
    needed_end = (1 + h.sub_hdr_size) * bs + bitmap_bytes + -(-max_mapnr // 8)
    if needed_end > src.size:
        raise DumpError(
            src.name, f"kdump bitmaps end at {needed_end:#x}, past the end of the file ({src.size:#x}): truncated or lying header"
        )
    split = bool(sub and h.header_version >= 2 and sub.split)
    start_pfn, end_pfn = 0, max_mapnr
    if split and sub is not None:
        start_pfn = sub.start_pfn_64 if h.header_version >= 6 else sub.start_pfn
        end_pfn = sub.end_pfn_64 if h.header_version >= 6 else sub.end_pfn
        if not start_pfn <= end_pfn <= max_mapnr:
            raise DumpError(src.name, f"split part covers PFNs {start_pfn:#x}-{end_pfn:#x} outside max_mapnr {max_mapnr:#x}")
    return _header(h, sub, max_mapnr, split, start_pfn, end_pfn)


def _header(h: Any, sub: Any, max_mapnr: int, split: bool, start_pfn: int, end_pfn: int) -> KdumpHeader:
    """The checked header, each sub-header field taken only from the header version that has it."""
    bs = h.block_size
    uts = [h.utsname[i * 65 : (i + 1) * 65].split(b"\0", 1)[0].decode("utf-8", "replace") for i in range(6)]
    return KdumpHeader(
        header_version=h.header_version,
        utsname=uts,
        status=h.status,
        block_size=bs,
        sub_hdr_size=h.sub_hdr_size,
        bitmap_blocks=h.bitmap_blocks,
        max_mapnr=max_mapnr,
        nr_cpus=h.nr_cpus,
        phys_base=sub.phys_base if sub else 0,
        dump_level=sub.dump_level if sub else 0,
        split=split,
        start_pfn=start_pfn,
        end_pfn=end_pfn,
        offset_vmcoreinfo=sub.offset_vmcoreinfo if sub and h.header_version >= 3 else 0,
        size_vmcoreinfo=sub.size_vmcoreinfo if sub and h.header_version >= 3 else 0,
        offset_note=sub.offset_note if sub and h.header_version >= 4 else 0,
        size_note=sub.size_note if sub and h.header_version >= 4 else 0,
        timestamp=h.tv_sec,
    )


class KdumpPart:
    """One file of a (possibly split) kdump-compressed dump."""

    def __init__(self, src: ByteSource) -> None:
        self.src = src
        self.h = parse_header(src)
        bs = self.h.block_size
        half = self.h.bitmap_blocks // 2 * bs
        base = (1 + self.h.sub_hdr_size) * bs
        self.bitmap1 = Bitmap(src, base, half)
        self.bitmap2 = Bitmap(src, base + half, half)
        self.pd_base = base + 2 * half
        self._rank_start = self.bitmap2.rank(self.h.start_pfn) if self.h.start_pfn else 0
        self._zero_offset: int | None | bool = False  # False = not computed yet

    def desc_index(self, pfn: int) -> int:
        return self.bitmap2.rank(pfn) - self._rank_start

    def n_desc(self) -> int:
        return self.bitmap2.rank(self.h.end_pfn) - self._rank_start

    def descriptor(self, pfn: int) -> tuple[int, int, int] | None:
        """(offset, size, flags) of a dumped PFN's descriptor, None if the table is truncated."""
        off = self.pd_base + PD_SIZE * self.desc_index(pfn)
        raw = self.src.pread(off, PD_SIZE)
        if len(raw) < PD_SIZE:
            return None
        o, s, f, _ = PAGE_DESC.unpack(raw)
        return o, s, f

    def zero_offset(self) -> int | None:
        """File offset of the shared zero page (dump level bit 1), if this dump has one."""
        if self._zero_offset is False:
            self._zero_offset = None
            data_start = self.pd_base + PD_SIZE * self.n_desc()
            bs = self.h.block_size
            page = self.src.pread(data_start, bs)
            if len(page) == bs and not any(page):
                self._zero_offset = data_start
        return self._zero_offset  # type: ignore[return-value]



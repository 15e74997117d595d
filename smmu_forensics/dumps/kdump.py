"""kdump-compressed dumps (signatures ``KDUMP   `` and ``DISKDUMP``), plain, flattened or split.

File layout (makedumpfile IMPLEMENTATION, ``write_kdump_header``)::

    0                               disk_dump_header          (block 0)
    block_size                      kdump_sub_header + notes  (sub_hdr_size blocks)
    (1 + sub_hdr_size) * bs         1st bitmap  (bitmap_blocks / 2 blocks): page not a hole
      + bitmap_blocks / 2 * bs      2nd bitmap  (bitmap_blocks / 2 blocks): page dumped
    (1 + sub_hdr_size + bitmap_blocks) * bs   page_desc[popcount(2nd bitmap)]
    ...                             page data

The granule is ``block_size`` (QEMU writes 64 KiB on aarch64 whatever the guest's page size),
never VMCOREINFO's PAGESIZE.  PFNs are absolute (``paddr >> log2(block_size)``).  The descriptor of
PFN n is number ``popcount(bitmap2[start_pfn .. n))``.  ``pd.offset == 0`` means the page was lost
(makedumpfile sets DUMP_DH_COMPRESSED_INCOMPLETE and writes descriptors and data in pairs).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from smmu_forensics.dumps.base import (
    VMCOREINFO_HIGHLIGHTS,
    DumpInfo,
    Hole,
    MemRange,
    PageState,
    PartialRead,
    PhysicalMemory,
    merge_ranges,
    parse_vmcoreinfo,
)
from smmu_forensics.dumps.codecs import (
    COMPRESSED_MASK,
    DUMP_DH_COMPRESSED_INCOMPLETE,
    codec_name,
    decompress_page,
    fast_decoders,
)
from smmu_forensics.dumps.source import ByteSource
from smmu_forensics.dumps.structs import KDUMP_SIGNATURES, DiskDumpHeader64, KdumpSubHeader64, PageDesc, compiled, dtype
from smmu_forensics.errors import CorruptPage, DumpError

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

    def _chunk(self, k: int) -> tuple[bytes, array]:
        hit = self._cache.get(k)
        if hit is not None:
            return hit
        start = k * BITMAP_CHUNK
        raw = self.src.pread(self.offset + start, max(0, min(BITMAP_CHUNK, self.nbytes - start)))
        raw += bytes(max(0, min(BITMAP_CHUNK, self.nbytes - start) - len(raw)))  # unwritten tail reads as zero
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

    def rank(self, bit: int) -> int:
        """Number of set bits strictly before ``bit``."""
        bit = max(0, min(bit, self.nbytes * 8))
        byte = bit >> 3
        k = byte // BITMAP_CHUNK
        while len(self._prefix) <= k:
            kk = len(self._prefix) - 1
            _, cum = self._chunk(kk)
            self._prefix.append(self._prefix[-1] + cum[-1])
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
            raw = self.src.pread(self.offset + start, min(BITMAP_CHUNK, nbytes - start))
            bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little").astype(np.int8)
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


class KdumpMemory(PhysicalMemory):
    """kdump-compressed physical memory (one file, or the parts of a ``--split`` dump)."""

    def __init__(self, sources: list[ByteSource], flattened: bool = False) -> None:
        self.parts = [KdumpPart(s) for s in sources]
        first = self.parts[0]
        self.path = ",".join(p.src.name for p in self.parts)
        self.page_size = first.h.block_size
        self._shift = self.page_size.bit_length() - 1
        self.flattened = flattened
        self.format_name = ("flattened+" if flattened else "") + "kdump"
        for p in self.parts[1:]:
            if p.h.block_size != first.h.block_size or p.h.max_mapnr != first.h.max_mapnr:
                raise DumpError(p.src.name, "split parts disagree on block_size or max_mapnr")
        if len(self.parts) > 1 and not all(p.h.split for p in self.parts):
            raise DumpError(self.path, "several files given but they are not parts of one --split dump")
        self.max_mapnr = first.h.max_mapnr
        self._cache: dict[int, bytes] = {}  # FIFO-bounded page cache
        self._cache_max = max(16, PAGE_CACHE_BYTES // self.page_size)
        self._vmcoreinfo: dict[str, str] | None = None
        self._fast = self._fast_path()

    def _fast_path(self) -> tuple | None:
        """Everything the hot path needs, for the common case: one memory-mapped file whose
        bitmaps fit in one chunk each (up to 32 GiB of RAM at 4 KiB pages).  Other dumps take
        the general path, which gives the same answers."""
        if len(self.parts) != 1:
            return None
        p = self.parts[0]
        view = getattr(p.src, "view", None)
        mm = view(0, p.src.size) if view is not None and p.src.size else None
        if mm is None or p.bitmap2.nbytes > BITMAP_CHUNK or p.h.start_pfn:
            return None
        b1, _ = p.bitmap1._chunk(0)
        b2, cum2 = p.bitmap2._chunk(0)
        zero = p.zero_offset()
        decoders = fast_decoders(self.page_size)
        return (mm, b1, b2, cum2, p.pd_base, p.src.size, -1 if zero is None else zero, p.h.end_pfn, decoders)

    # -- page level --------------------------------------------------------------------------
    def _part(self, pfn: int) -> KdumpPart | None:
        for p in self.parts:
            if p.h.start_pfn <= pfn < p.h.end_pfn:
                return p
        return None

    def _pfn_state(self, pfn: int) -> tuple[PageState, str, KdumpPart | None, tuple[int, int, int] | None]:
        if pfn < 0 or pfn >= self.max_mapnr:
            return PageState.ABSENT, "beyond max_mapnr", None, None
        first = self.parts[0]
        if not first.bitmap1.test(pfn):
            return PageState.ABSENT, "memory hole (1st bitmap)", None, None
        part = self._part(pfn)
        if part is None:
            return PageState.LOST, "no split part covers this PFN", None, None
        if not part.bitmap2.test(pfn):
            return PageState.EXCLUDED, f"excluded by makedumpfile (dump level {part.h.dump_level})", part, None
        d = part.descriptor(pfn)
        if d is None:
            return PageState.LOST, "page descriptor table truncated", part, None
        off, size, _ = d
        if off == 0:
            return PageState.LOST, "descriptor empty: dump incomplete", part, d
        if size > self.page_size:
            return PageState.CORRUPT, f"descriptor stores {size} bytes, more than block_size {self.page_size}", part, d
        if off + size > part.src.size:
            return PageState.LOST, f"page data past the end of the file ({part.src.size:#x}): truncated", part, d
        if off == part.zero_offset() and size == self.page_size:
            return PageState.ZERO, "", part, d
        return PageState.PRESENT, "", part, d

    def _page(self, pfn: int) -> bytes | tuple[PageState, str]:
        hit = self._cache.get(pfn)
        if hit is not None:
            return hit
        fast = self._fast
        if fast is not None and 0 <= pfn < fast[7]:
            mm, b1, b2, cum2, pd_base, fsize, zero, _, decoders = fast
            byte, bit = pfn >> 3, 1 << (pfn & 7)
            if b1[byte] & bit and b2[byte] & bit:
                off = pd_base + PD_SIZE * (cum2[byte] + _POPCNT_LIST[b2[byte] & (bit - 1)])
                if off + PD_SIZE <= fsize:
                    o, s, f, _ = _unpack_pd(mm, off)
                    ps = self.page_size
                    dec = decoders.get(f)
                    if dec is not None and o and o != zero and s <= ps and o + s <= fsize:
                        try:
                            page = dec(mm[o : o + s])
                        except Exception:
                            page = b""  # the general path below says what is wrong
                        if len(page) == ps:
                            cache = self._cache
                            if len(cache) >= self._cache_max:
                                del cache[next(iter(cache))]
                            cache[pfn] = page
                            return page
        state, reason, part, d = self._pfn_state(pfn)
        if not state.readable:
            return state, reason
        assert part is not None and d is not None
        off, size, flags = d
        where = f"physical {pfn << self._shift:#x}"
        data = part.src.pread(off, size)
        try:
            page = decompress_page(flags & COMPRESSED_MASK, data, self.page_size)
        except CorruptPage as exc:
            return PageState.CORRUPT, f"{where}: {exc}"
        if len(self._cache) >= self._cache_max:
            del self._cache[next(iter(self._cache))]
        self._cache[pfn] = page
        return page

    def read(self, addr: int, size: int) -> bytes:
        pfn = addr >> self._shift
        off = addr - (pfn << self._shift)
        if 0 <= size and off + size <= self.page_size:  # fast path: inside one page
            got = self._page(pfn)
            if isinstance(got, bytes):
                return got[off : off + size] if size != self.page_size else got
        return super().read(addr, size)

    def read_partial(self, addr: int, size: int) -> PartialRead:
        if size < 0 or size > 1 << 30:
            raise ValueError(f"read of {size} bytes refused")
        ps = self.page_size
        out = bytearray(size)
        holes: list[Hole] = []
        pos, end = addr, addr + size
        while pos < end:
            pfn = pos >> self._shift
            in_page = pos - (pfn << self._shift)
            n = min(end - pos, ps - in_page)
            got = self._page(pfn)
            if isinstance(got, bytes):
                out[pos - addr : pos - addr + n] = got[in_page : in_page + n]
            else:
                state, reason = got
                if holes and holes[-1].end == pos and holes[-1].state == state and holes[-1].reason == reason:
                    holes[-1] = Hole(holes[-1].start, pos + n, state, reason)
                else:
                    holes.append(Hole(pos, pos + n, state, reason))
            pos += n
        return PartialRead(addr, bytes(out), holes)

    def page_state(self, addr: int) -> PageState:
        return self._pfn_state(addr >> self._shift)[0]

    def ranges(self) -> list[MemRange]:
        ps = self.page_size
        b1 = self.parts[0].bitmap1.runs(self.max_mapnr)
        out: list[MemRange] = []
        dumped: list[tuple[int, int]] = []
        for p in self.parts:
            dumped += [(max(a, p.h.start_pfn), min(b, p.h.end_pfn)) for a, b in p.bitmap2.runs(p.h.end_pfn)]
        dumped = sorted((a, b) for a, b in dumped if a < b)
        for a, b in b1:
            out.append(MemRange(a * ps, b * ps, PageState.EXCLUDED))
        for a, b in dumped:
            out.append(MemRange(a * ps, b * ps, PageState.PRESENT))
        return _overlay(out)

    # -- metadata ----------------------------------------------------------------------------
    def vmcoreinfo(self) -> dict[str, str]:
        if self._vmcoreinfo is None:
            h = self.parts[0].h
            blob = b""
            if h.offset_vmcoreinfo and 0 < h.size_vmcoreinfo <= 1 << 20:
                blob = self.parts[0].src.pread(h.offset_vmcoreinfo, h.size_vmcoreinfo)
            self._vmcoreinfo = parse_vmcoreinfo(blob) if blob else {}
        return self._vmcoreinfo

    def _count_pages(self) -> dict[str, int | None]:
        counts: dict[str, int | None] = {}
        first = self.parts[0]
        not_hole = first.bitmap1.rank(self.max_mapnr)
        dumped = sum(p.n_desc() for p in self.parts)
        counts["excluded"] = max(0, not_hole - dumped)
        zero: int | None = 0
        lost: int | None = 0
        for p in self.parts:
            n = p.n_desc()
            if n > MAX_DESC_SCAN or zero is None or lost is None:
                zero = lost = None
                continue
            z = p.zero_offset()
            dt = dtype(PageDesc)
            for d0 in range(0, n, DESC_SCAN_CHUNK):
                k = min(DESC_SCAN_CHUNK, n - d0)
                raw = p.src.pread(p.pd_base + d0 * PD_SIZE, k * PD_SIZE)
                nfull = len(raw) // PD_SIZE
                desc = np.frombuffer(raw[: nfull * PD_SIZE], dtype=dt)
                zero += int(np.count_nonzero(desc["offset"] == z)) if z is not None else 0
                bad = (desc["offset"] == 0) | (desc["offset"] + desc["size"].astype(np.uint64) > np.uint64(p.src.size))
                lost += int(np.count_nonzero(bad)) + (k - nfull)
        counts["zero"] = zero
        counts["lost"] = lost
        counts["present"] = dumped - (zero or 0) - (lost or 0) if zero is not None else dumped
        return counts

    def info(self) -> DumpInfo:
        h = self.parts[0].h
        reasons = []
        for p in self.parts:
            if p.h.status & DUMP_DH_COMPRESSED_INCOMPLETE:
                reasons.append(f"{p.src.name}: header has DUMP_DH_COMPRESSED_INCOMPLETE (makedumpfile ran out of space)")
            if getattr(p.src, "truncated", False):
                reasons.append(f"{p.src.name}: flattened stream ends without its end marker: truncated")
        counts = self._count_pages()
        ranges = self.ranges()
        if any(getattr(b, "truncated", False) for p in self.parts for b in (p.bitmap1, p.bitmap2)):
            reasons.append(f"the bitmaps hold more than {MAX_RUNS} runs: ranges listed only up to that")
        if counts.get("lost"):
            reasons.append(f"{counts['lost']} page(s) lost (empty descriptor or data past the end of the file)")
        codecs = {codec_name(p.h.status & COMPRESSED_MASK) for p in self.parts}
        vmci = self.vmcoreinfo()
        return DumpInfo(
            path=self.path,
            format=self.format_name,
            codec=",".join(sorted(codecs)),
            page_size=self.page_size,
            ranges=ranges,
            pages=counts,
            incomplete=bool(reasons),
            incomplete_reasons=reasons,
            vmcoreinfo=vmci,
            notes=[],
            details={
                "signature": "kdump",
                "header_version": h.header_version,
                "block_size": h.block_size,
                "max_mapnr": h.max_mapnr,
                "dump_level": h.dump_level,
                "split_parts": len(self.parts) if h.split else 0,
                "nr_cpus": h.nr_cpus,
                "phys_base": f"{h.phys_base:#x}",
                "utsname": {k: v for k, v in zip(("sysname", "nodename", "release", "version", "machine", "domainname"), h.utsname) if v},
                "vmcoreinfo_keys": [k for k in VMCOREINFO_HIGHLIGHTS if k in vmci],
            },
        )

    def close(self) -> None:
        if self._fast is not None:
            self._fast[0].release()
            self._fast = None
        for p in self.parts:
            p.src.close()


def _overlay(ranges: list[MemRange]) -> list[MemRange]:
    """Later (PRESENT) ranges override earlier (EXCLUDED) ones; result merged and sorted."""
    pts = sorted({r.start for r in ranges} | {r.end for r in ranges})
    if len(pts) > 1 << 20:  # pathological bitmaps: coarse answer
        return merge_ranges(ranges)
    import bisect

    out = []
    pres = merge_ranges([r for r in ranges if r.state is PageState.PRESENT])
    excl = merge_ranges([r for r in ranges if r.state is PageState.EXCLUDED])
    pstarts = [r.start for r in pres]
    for r in excl:
        pos = r.start
        i = max(0, bisect.bisect_right(pstarts, pos) - 1)
        while pos < r.end:
            while i < len(pres) and pres[i].end <= pos:
                i += 1
            if i < len(pres) and pres[i].start <= pos:
                pos = min(pres[i].end, r.end)
                continue
            nxt = pres[i].start if i < len(pres) else r.end
            nxt = min(nxt, r.end)
            out.append(MemRange(pos, nxt, PageState.EXCLUDED))
            pos = nxt
    return merge_ranges(out + pres)

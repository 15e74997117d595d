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
from typing import NamedTuple

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
from smmu_forensics.dumps.kdump_parts import (
    _POPCNT_LIST,
    BITMAP_CHUNK,
    DESC_SCAN_CHUNK,
    MAX_DESC_SCAN,
    MAX_RUNS,
    PAGE_CACHE_BYTES,
    PAGE_DESC,
    PD_SIZE,
    KdumpPart,
    _unpack_pd,
    is_kdump,
)
from smmu_forensics.dumps.source import ByteSource
from smmu_forensics.dumps.structs import PageDesc, dtype
from smmu_forensics.errors import CorruptPage, DumpError

__all__ = ["KdumpMemory", "is_kdump", "PAGE_DESC"]


class _FastPath(NamedTuple):
    """What the hot path needs for one memory-mapped file whose bitmaps fit one chunk each."""

    mm: memoryview
    bitmap1: bytes
    bitmap2: bytes
    cum2: array  # descriptors before each byte of the 2nd bitmap
    pd_base: int
    file_size: int
    zero_offset: int  # -1: no shared zero page
    end_pfn: int
    decoders: dict


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

    def _fast_path(self) -> _FastPath | None:
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
        return _FastPath(mm, b1, b2, cum2, p.pd_base, p.src.size, -1 if zero is None else zero, p.h.end_pfn, decoders)

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
            if not first.bitmap1.known(pfn):
                return PageState.LOST, "the 1st bitmap's byte for this page is not in the file", None, None
            return PageState.ABSENT, "memory hole (1st bitmap)", None, None
        part = self._part(pfn)
        if part is None:
            return PageState.LOST, "no split part covers this PFN", None, None
        fu = part.bitmap2.first_unknown
        if fu is not None and pfn >= fu:
            return PageState.LOST, "the 2nd bitmap is missing from here on (a flattened record): this page's descriptor cannot be located", part, None
        if not part.bitmap2.test(pfn):
            if not part.bitmap2.known(pfn):
                return PageState.LOST, "the 2nd bitmap's byte for this page is not in the file", part, None
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
        if part.src.has_gaps and part.src.unwritten(off, size) is not None:
            return PageState.LOST, "no flattened record wrote this page's data (a record is missing)", part, d
        if off == part.zero_offset() and size == self.page_size:
            return PageState.ZERO, "", part, d
        return PageState.PRESENT, "", part, d

    def _page(self, pfn: int) -> bytes | tuple[PageState, str]:
        hit = self._cache.get(pfn)
        if hit is not None:
            return hit
        fast = self._fast
        if fast is not None and 0 <= pfn < fast.end_pfn:
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
                        if page and len(page) != ps:  # decoded, to the wrong size: corrupt (never decode it twice)
                            return PageState.CORRUPT, f"physical {pfn << self._shift:#x}: page decodes to {len(page)} bytes, not {ps}"
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
        res = _overlay(out)
        for p in self.parts:  # past a missing piece of the 2nd bitmap nothing can be located: lost
            if p.bitmap2.first_unknown is not None:
                res = _mark_lost(res, max(p.bitmap2.first_unknown, p.h.start_pfn) * ps, p.h.end_pfn * ps)
        return res

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
                bad = (desc["offset"] == 0) | p.src.unwritten_many(desc["offset"], desc["size"].astype(np.uint64))
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
            if p.bitmap2.first_unknown is not None or p.bitmap1.first_unknown is not None:
                reasons.append(f"{p.src.name}: the kdump bitmaps are missing from PFN "
                               f"{min(x for x in (p.bitmap1.first_unknown, p.bitmap2.first_unknown) if x is not None):#x} on "
                               "(a flattened record never arrived): those pages are lost")
        counts = self._count_pages()
        ranges = self.ranges()
        if any(getattr(b, "truncated", False) for p in self.parts for b in (p.bitmap1, p.bitmap2)):
            reasons.append(f"the bitmaps hold more than {MAX_RUNS} runs: ranges listed only up to that")
        if counts.get("lost"):
            reasons.append(f"{counts['lost']} page(s) lost (empty descriptor, data past the end of the file or in no flattened record)")
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


def _mark_lost(ranges: list[MemRange], start: int, end: int) -> list[MemRange]:
    """``ranges`` with their parts inside ``[start, end)`` marked lost."""
    out: list[MemRange] = []
    for r in ranges:
        if r.end <= start or r.start >= end:
            out.append(r)
            continue
        if r.start < start:
            out.append(MemRange(r.start, start, r.state))
        out.append(MemRange(max(r.start, start), min(r.end, end), PageState.LOST))
        if r.end > end:
            out.append(MemRange(end, r.end, r.state))
    return merge_ranges(out)


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

"""Segment-mapped memory: physical ranges backed by runs of a file (ELF, LiME, raw).

Each :class:`Segment` says "physical ``[paddr, paddr+memsz)`` is at file offset ``offset`` for
its first ``filesz`` bytes"; bytes past ``filesz`` are excluded by the dumper, bytes past the
end of the file are lost (truncated file).  Overlapping segments (the kernel-text PT_LOAD of a
vmcore overlaps a RAM PT_LOAD) are resolved once, larger segment first.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from smmu_forensics.dumps.base import (
    DumpInfo,
    Hole,
    MemRange,
    PageState,
    PartialRead,
    PhysicalMemory,
    merge_ranges,
)
from smmu_forensics.dumps.source import ByteSource

#: A read larger than this is refused (bounded memory whatever a caller asks).
MAX_READ = 1 << 30


@dataclass(frozen=True)
class Segment:
    paddr: int
    memsz: int
    offset: int  # file offset of paddr
    filesz: int  # bytes present in the file (<= memsz)
    excluded_reason: str = "excluded by the dumper (p_filesz < p_memsz)"

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


def _disjoint(segs: list[Segment]) -> list[Segment]:
    """Clip overlaps: a larger segment keeps the overlapping bytes (kernel text vs RAM; equal sizes:
    the lower address).  One sweep over the segments' boundaries with a heap of the segments that
    cover the current point: O(n log n), whatever the overlaps (a chain of 65,535 overlapping
    PT_LOADs included)."""
    segs = sorted((s for s in segs if s.memsz > 0), key=lambda s: (s.paddr, -s.memsz))
    if all(a.end <= b.paddr for a, b in zip(segs, segs[1:])):
        return segs
    rank = {id(s): r for r, s in enumerate(sorted(segs, key=lambda s: -s.memsz))}  # lower rank wins
    bounds = sorted({x for s in segs for x in (s.paddr, s.end)})
    heap: list[tuple[int, int, Segment]] = []
    kept: list[Segment] = []
    owner: list[int] = []  # the rank of the segment each kept piece came from
    k = 0
    for x, y in zip(bounds, bounds[1:]):
        while k < len(segs) and segs[k].paddr <= x:
            heapq.heappush(heap, (rank[id(segs[k])], k, segs[k]))
            k += 1
        while heap and heap[0][2].end <= x:
            heapq.heappop(heap)
        if not heap:
            continue
        r, _, s = heap[0]
        if kept and kept[-1].end == x and owner[-1] == r:  # the same segment goes on: one piece
            x = kept.pop().paddr
            owner.pop()
        delta = x - s.paddr
        kept.append(Segment(x, y - x, s.offset + delta, max(0, min(s.filesz - delta, y - x)), s.excluded_reason))
        owner.append(r)
    return kept


class SegmentMemory(PhysicalMemory):
    """Physical memory backed by file segments (base class of ELF, LiME and raw layers)."""

    def __init__(self, src: ByteSource, segments: list[Segment], page_size: int = 4096) -> None:
        self.src = src
        self.path = src.name
        self.page_size = page_size
        self.segments = _disjoint(segments)
        self._starts = [s.paddr for s in self.segments]

    # -- lookups -----------------------------------------------------------------------------
    def _find(self, addr: int) -> Segment | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.segments[i].end:
            return self.segments[i]
        return None

    def _state_at(self, addr: int) -> tuple[PageState, int, str]:
        """(state, end of the run with that state, reason) for the byte at ``addr``."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0 or addr >= self.segments[i].end:
            nxt = self._starts[i + 1] if i + 1 < len(self._starts) else 1 << 64
            return PageState.ABSENT, nxt, "outside every range of the dump"
        s = self.segments[i]
        # a segment is three runs: bytes in the file, bytes meant to be in it but past its end
        # (truncated), and bytes past p_filesz (excluded by the dumper)
        present_end = s.paddr + min(s.filesz, max(self.src.size - s.offset, 0))
        if addr < present_end:
            if self.src.has_gaps:  # a flattened stream that lost a record: its bytes are lost, not zero
                gap = self.src.unwritten(s.offset + (addr - s.paddr), present_end - addr)
                if gap is not None:
                    g0, g1 = s.paddr + (gap[0] - s.offset), s.paddr + (gap[1] - s.offset)
                    if g0 <= addr:
                        return PageState.LOST, g1, "no flattened record wrote these bytes (a record is missing)"
                    return PageState.PRESENT, g0, ""
            return PageState.PRESENT, present_end, ""
        if addr < s.paddr + s.filesz:
            return PageState.LOST, s.paddr + s.filesz, f"file ends at {self.src.size:#x}: truncated"
        return PageState.EXCLUDED, s.end, s.excluded_reason

    def read_partial(self, addr: int, size: int) -> PartialRead:
        if size < 0 or size > MAX_READ:
            raise ValueError(f"read of {size} bytes refused (limit {MAX_READ})")
        out = bytearray(size)
        holes: list[Hole] = []
        pos = addr
        end = addr + size
        while pos < end:
            state, run_end, reason = self._state_at(pos)
            n = min(end, run_end) - pos
            if state is PageState.PRESENT:
                s = self._find(pos)
                assert s is not None
                b = self.src.pread(s.offset + (pos - s.paddr), n)
                out[pos - addr : pos - addr + len(b)] = b
                if len(b) < n:  # cannot happen unless the file shrank under us
                    holes.append(Hole(pos + len(b), pos + n, PageState.LOST, "short read"))
            else:
                if holes and holes[-1].end == pos and holes[-1].state == state:
                    holes[-1] = Hole(holes[-1].start, pos + n, state, reason)
                else:
                    holes.append(Hole(pos, pos + n, state, reason))
            pos += n
        return PartialRead(addr, bytes(out), holes)

    def scan_chunks(self, chunk: int = 8 << 20, overlap: int = 64) -> Iterator[tuple[int, bytes | memoryview, int]]:
        """Zero-copy views of the file's data: segments' sparse holes (zeros) are skipped."""
        extents = getattr(self.src, "data_extents", None)
        view = getattr(self.src, "view", None)
        if extents is None or view is None:
            yield from super().scan_chunks(chunk, overlap)
            return
        for s in self.segments:
            for off, size in extents(s.offset, s.filesz):
                pos = off
                while pos < off + size:
                    n = min(chunk, off + size - pos)
                    paddr = s.paddr + (pos - s.offset)
                    buf = view(pos, min(n + overlap, s.offset + s.filesz - pos))
                    if buf is None:
                        buf = self.read_partial(paddr, n + overlap).data
                    yield paddr, buf, n
                    pos += n

    def page_state(self, addr: int) -> PageState:
        return self._state_at(addr)[0]

    def ranges(self) -> list[MemRange]:
        out: list[MemRange] = []
        for s in self.segments:
            pos = s.paddr
            while pos < s.end:
                state, run_end, _ = self._state_at(pos)
                run_end = min(run_end, s.end)
                out.append(MemRange(pos, run_end, state))
                pos = run_end
        return merge_ranges(out)

    def _page_counts(self) -> dict[str, int | None]:
        counts: dict[str, int | None] = {s.value: 0 for s in PageState if s is not PageState.ABSENT}
        counts[PageState.ZERO.value] = None  # a segment dump does not mark zero pages
        ps = self.page_size
        for r in self.ranges():
            n = (r.end + ps - 1) // ps - r.start // ps
            key = r.state.value
            counts[key] = (counts.get(key) or 0) + n
        return counts

    def _base_info(self, fmt: str, codec: str | None = None) -> DumpInfo:
        rs = self.ranges()
        lost = [r for r in rs if r.state is PageState.LOST]
        extra = []
        if getattr(self.src, "truncated", False):
            extra.append(f"{self.src.name}: flattened stream ends without its end marker: truncated")
        reasons = [f"{len(lost)} range(s) of memory the dump meant to hold are missing from the file "
                   f"({'a flattened record is missing' if self.src.has_gaps else f'it ends at {self.src.size:#x}'})"] if lost else []
        return DumpInfo(
            path=self.path,
            format=fmt,
            codec=codec,
            page_size=self.page_size,
            ranges=rs,
            pages=self._page_counts(),
            incomplete=bool(lost or extra),
            incomplete_reasons=reasons + extra,
            vmcoreinfo=self.vmcoreinfo(),
            notes=[],
        )

    def close(self) -> None:
        self.src.close()

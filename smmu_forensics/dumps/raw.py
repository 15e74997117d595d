"""A raw physical dump with no header: the user says where it starts (``PATH@BASE``).

Several files may be given (``a.bin@0x80000000,b.bin@0x880000000``, crash's ``ramdump`` syntax);
LiME's ``padded`` mode is ``PATH@0``.
"""

from __future__ import annotations

from smmu_forensics.dumps.base import DumpInfo
from smmu_forensics.dumps.segments import Segment, SegmentMemory
from smmu_forensics.dumps.source import ByteSource


class RawMemory(SegmentMemory):
    def __init__(self, parts: list[tuple[ByteSource, int]]) -> None:
        self._parts = parts
        segs = [Segment(base, src.size, 0, src.size) for src, base in parts]
        if len(parts) == 1:
            super().__init__(parts[0][0], segs)
        else:
            super().__init__(_MultiSource(parts), [])
            self.segments = []
            off = 0
            for src, base in parts:
                self.segments.append(Segment(base, src.size, off, src.size))
                off += src.size
            self.segments.sort(key=lambda s: s.paddr)
            self._starts = [s.paddr for s in self.segments]
        self.path = ",".join(f"{s.name}@{b:#x}" for s, b in parts)
        self.format_name = "raw"

    def info(self) -> DumpInfo:
        inf = self._base_info("raw")
        inf.details = {"bases": [f"{s.name}@{b:#x}" for s, b in self._parts]}
        return inf


class _MultiSource(ByteSource):
    """Concatenation of several sources (each raw part at its own offset)."""

    def __init__(self, parts: list[tuple[ByteSource, int]]) -> None:
        self.parts = [s for s, _ in parts]
        self.name = ",".join(s.name for s in self.parts)
        self.size = sum(s.size for s in self.parts)

    def pread(self, offset: int, size: int) -> bytes:
        out = bytearray()
        pos = 0
        for s in self.parts:
            if offset < pos + s.size and offset + size > pos:
                a = max(offset, pos) - pos
                b = min(offset + size, pos + s.size) - pos
                out += s.pread(a, b - a)
            pos += s.size
        return bytes(out)

    def close(self) -> None:
        for s in self.parts:
            s.close()

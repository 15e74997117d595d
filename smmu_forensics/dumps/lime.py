"""LiME memory images (``format=lime``): 32-byte range headers, each followed by its bytes.

Header (LiME ``src/lime.h`` ``lime_mem_range_header``, packed, little-endian as volatility3's
``"<IIQQQ"``): u32 magic 0x4C694D45, u32 version 1, u64 s_addr, u64 e_addr (inclusive),
u8 reserved[8].  ``padded`` mode has no headers (file offset = physical address): open it as
``PATH@0``.  ``raw`` mode loses the addresses: give each file's base as ``PATH@BASE``.
"""

from __future__ import annotations

from smmu_forensics.dumps.base import DumpInfo
from smmu_forensics.dumps.segments import Segment, SegmentMemory
from smmu_forensics.dumps.source import ByteSource
from smmu_forensics.dumps.structs import LIME_MAGIC, LimeHeader, compiled
from smmu_forensics.errors import DumpError

LIME_VERSION = 1
LIME_HEADER = compiled(LimeHeader)
MAX_RANGES = 1 << 16


def is_lime(head: bytes) -> bool:
    return len(head) >= LIME_HEADER.size and LIME_HEADER.unpack_from(head)[:2] == (LIME_MAGIC, LIME_VERSION)


class LimeMemory(SegmentMemory):
    def __init__(self, src: ByteSource) -> None:
        segs: list[Segment] = []
        pos = 0
        last_end = -1
        self.truncated = False
        while pos < src.size:
            raw = src.pread(pos, LIME_HEADER.size)
            if len(raw) < LIME_HEADER.size:
                self.truncated = True
                break
            magic, version, s, e, _ = LIME_HEADER.unpack(raw)
            if magic != LIME_MAGIC or version != LIME_VERSION:
                raise DumpError(src.name, f"LiME header at offset {pos:#x} has magic {magic:#x} version {version}")
            if e < s or s <= last_end:
                raise DumpError(src.name, f"LiME range {s:#x}-{e:#x} at offset {pos:#x} is inverted or out of order")
            if len(segs) >= MAX_RANGES:
                raise DumpError(src.name, f"more than {MAX_RANGES} LiME ranges")
            size = e - s + 1
            segs.append(Segment(s, size, pos + LIME_HEADER.size, size))
            last_end = e
            pos += LIME_HEADER.size + size
        if pos > src.size:
            self.truncated = True
        super().__init__(src, segs)
        self.format_name = "lime"

    def info(self) -> DumpInfo:
        inf = self._base_info("lime")
        inf.details = {"ranges_in_file": len(self.segments)}
        return inf

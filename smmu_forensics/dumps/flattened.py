"""makedumpfile's flattened format (``makedumpfile -F``, QEMU ``dump-guest-memory -z``).

Layout (makedumpfile IMPLEMENTATION, makedumpfile.h ``struct makedumpfile_header`` and
``struct makedumpfile_data_header``): a 4096-byte header, big-endian ``char signature[16] =
"makedumpfile"``, ``int64 type = 1``, ``int64 version = 1``; then records ``{int64 offset;
int64 buf_size}`` (big-endian) followed by ``buf_size`` bytes meaning "these bytes go at
``offset`` of the real file"; ``offset = buf_size = -1`` ends the stream.  Records may be out of
order and may overwrite earlier ones.  ``makedumpfile -R`` leaves unwritten ranges as zeros; here
they are *gaps* (:meth:`FlatSource.unwritten`), so a record lost in transit makes the pages it
carried ``lost``, never zeros.  The records are indexed once; reads then go straight to the
flattened file, so the user needs no conversion step.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable

import numpy as np

from smmu_forensics.dumps.source import ByteSource, FileSource
from smmu_forensics.dumps.structs import FLAT_SIGNATURE, FlatHeader, FlatRecord, compiled
from smmu_forensics.errors import DumpError

FLAT_HEADER_SIZE = 4096  # makedumpfile.h MAX_SIZE_MDF_HEADER
FLAT_TYPE_KDUMP = 1  # TYPE_FLAT_HEADER
FLAT_VERSION = 1  # VERSION_FLAT_HEADER
#: one record larger than this is treated as corrupt (makedumpfile writes at most a few MiB)
MAX_RECORD = 1 << 32
#: index size limit: 64 M records (~1.5 GiB of index) is far beyond any real dump
MAX_RECORDS = 1 << 26
#: past this many records, tiny ones are refused: makedumpfile and QEMU write buffers of KiBs to
#: MiBs (QEMU's capture: 82 records, 245 KiB median), so millions of records averaging under
#: MIN_AVG_RECORD bytes are a hostile file, not a dump (and would cost ~100 bytes of index each)
MANY_RECORDS = 1 << 22
MIN_AVG_RECORD = 512
#: consecutive records of size 0 (a sparse run of zeros parses as endless {0, 0} records)
MAX_EMPTY_RUN = 1 << 12


def is_flattened(head: bytes) -> bool:
    return head[:12] == FLAT_SIGNATURE and head[12:16] == b"\0\0\0\0"


class FlatSource(ByteSource):
    """The real (reassembled) file as a random-access source over a flattened stream."""

    def __init__(self, src: FileSource, progress: Callable[[int, int], None] | None = None) -> None:
        self.inner = src
        self.name = src.name
        head = src.pread_exact(0, 32, "flattened header")
        if not is_flattened(head):
            raise DumpError(src.name, "not a makedumpfile flattened file")
        h = FlatHeader.parse(head)
        ftype, version = h.type, h.version
        if ftype != FLAT_TYPE_KDUMP or version != FLAT_VERSION:
            raise DumpError(src.name, f"flattened header type {ftype} version {version}, expected 1 and 1")
        self.truncated = False
        dst, size, srcoff = self._scan(src, progress)
        self.records = len(dst)
        starts = np.frombuffer(dst, dtype=np.int64)
        order = np.argsort(starts, kind="stable")
        self._start = starts[order]
        self._size = np.frombuffer(size, dtype=np.int64)[order]
        self._src = np.frombuffer(srcoff, dtype=np.int64)[order]
        self._order = order.astype(np.int64)  # write order: later records win
        ends = self._start + self._size
        self._prefmax = np.maximum.accumulate(ends) if len(ends) else ends
        self.size = int(ends.max()) if len(ends) else 0
        self._overlaps = bool(len(ends) > 1 and np.any(self._start[1:] < self._prefmax[:-1]))
        # runs no record covers, between the first written byte and the end (O(n) over the sorted index)
        if len(ends):
            before = np.concatenate(([0], self._prefmax[:-1]))
            g = np.flatnonzero(self._start > before)
            self._gap_start, self._gap_end = before[g], self._start[g]
        else:
            self._gap_start = self._gap_end = np.zeros(0, dtype=np.int64)
        self.has_gaps = bool(len(self._gap_start))

    def unwritten_many(self, offsets, sizes):  # type: ignore[no-untyped-def]
        offsets, ends = offsets.astype(np.int64), offsets.astype(np.int64) + sizes.astype(np.int64)
        out = ends > self.size
        if self.has_gaps:
            k = np.searchsorted(self._gap_end, offsets, side="right")
            inside = k < len(self._gap_start)
            out |= inside & (self._gap_start[np.minimum(k, len(self._gap_start) - 1)] < ends) & (sizes > 0)
        return out

    def unwritten(self, offset: int, size: int) -> tuple[int, int] | None:
        end = offset + size
        if size <= 0:
            return None
        if self.has_gaps:
            k = int(np.searchsorted(self._gap_end, offset, side="right"))
            if k < len(self._gap_start) and int(self._gap_start[k]) < end:
                return max(offset, int(self._gap_start[k])), min(end, int(self._gap_end[k]))
        return (max(offset, self.size), end) if end > self.size else None

    def _scan(self, src: FileSource, progress: Callable[[int, int], None] | None) -> tuple[array, array, array]:
        """Every record's (destination offset, size, source offset), in file order; sets ``truncated``."""
        dst = array("q")  # 8 bytes a field: the index costs 24 bytes a record, at most 1.5x the file
        size = array("q")
        srcoff = array("q")
        pos = FLAT_HEADER_SIZE
        total = src.size
        mm = src.view(0, total) if total else None
        unpack = compiled(FlatRecord).unpack_from
        last_tick = time.monotonic()
        empty = 0
        while True:
            if pos + 16 > total:
                self.truncated = True
                break
            if mm is not None:
                off, n = unpack(mm, pos)
            else:
                off, n = unpack(src.pread(pos, 16))
            if off == -1 and n == -1:
                break
            if off < 0 or n < 0 or n > MAX_RECORD:
                raise DumpError(src.name, f"flattened record at {pos:#x} is corrupt (offset {off}, size {n})")
            if n == 0:
                empty += 1
                if empty > MAX_EMPTY_RUN:
                    raise DumpError(src.name, f"more than {MAX_EMPTY_RUN} empty flattened records in a row at {pos:#x}: "
                                              "not a flattened dump (a run of zeros?)")
            else:
                empty = 0
            if len(dst) >= MAX_RECORDS:
                raise DumpError(src.name, f"more than {MAX_RECORDS} flattened records")
            if len(dst) == MANY_RECORDS and (pos - FLAT_HEADER_SIZE) // MANY_RECORDS < 16 + MIN_AVG_RECORD:
                raise DumpError(src.name, f"{MANY_RECORDS} flattened records averaging under {MIN_AVG_RECORD} bytes: "
                                          "not what makedumpfile or QEMU write")
            avail = min(n, total - pos - 16)
            if avail > 0:
                dst.append(off)
                size.append(avail)
                srcoff.append(pos + 16)
            if avail < n:
                self.truncated = True
                break
            pos += 16 + n
            if progress is not None and (len(dst) & 0xFFF) == 0:
                now = time.monotonic()
                if now - last_tick > 0.1:
                    progress(pos, total)
                    last_tick = now
        if mm is not None:
            mm.release()
        if progress is not None:
            progress(total, total)
        return dst, size, srcoff

    def pread(self, offset: int, size: int) -> bytes:
        if size <= 0 or offset < 0 or offset >= self.size:
            return b""
        end = min(offset + size, self.size)
        j = int(np.searchsorted(self._start, end, side="left"))
        i = int(np.searchsorted(self._prefmax, offset, side="right"))
        if not self._overlaps and j - i == 1:
            s = int(self._start[i])
            if s <= offset and s + int(self._size[i]) >= end:
                return self.inner.pread(int(self._src[i]) + offset - s, end - offset)
        buf = bytearray(end - offset)
        cand = [k for k in range(i, j) if int(self._start[k]) + int(self._size[k]) > offset]
        cand.sort(key=lambda k: int(self._order[k]))
        for k in cand:
            s = int(self._start[k])
            a = max(s, offset)
            b = min(s + int(self._size[k]), end)
            buf[a - offset : b - offset] = self.inner.pread(int(self._src[k]) + a - s, b - a)
        return bytes(buf)

    def close(self) -> None:
        self.inner.close()

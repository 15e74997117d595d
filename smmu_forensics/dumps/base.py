"""The physical-memory interface every dump format provides.

A layer maps physical addresses to bytes.  Memory the dump lacks is never returned as zeros:
:meth:`PhysicalMemory.read` raises :class:`MemoryMissing`, and :meth:`PhysicalMemory.read_partial`
returns the bytes it has plus a list of :class:`Hole` objects saying what is missing and why.

Example::

    >>> from smmu_forensics.dumps.sniff import open_dump
    >>> mem = open_dump("fixtures/qemu-panic-carved.elf")
    >>> mem.read(0x431be000, 16).hex()
    '0900c67a000000000940c67a00000000'
    >>> mem.page_state(0x0)
    <PageState.ABSENT: 'absent'>
    >>> mem.close()
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum


class PageState(str, Enum):
    """What a dump says about one page of physical memory."""

    PRESENT = "present"  # the dump holds its bytes
    ZERO = "zero"  # the dump records it as a zero page (its bytes are known: all zero)
    EXCLUDED = "excluded"  # the dumper filtered it out (makedumpfile -d, p_filesz < p_memsz)
    ABSENT = "absent"  # outside every range the dump covers (a hole, MMIO, beyond RAM)
    LOST = "lost"  # the dump meant to hold it but the file is incomplete or truncated
    CORRUPT = "corrupt"  # the dump stores it, but its data does not decode (bad compression, wrong size)

    @property
    def readable(self) -> bool:
        return self in (PageState.PRESENT, PageState.ZERO)


@dataclass(frozen=True)
class MemRange:
    """A run of physical memory ``[start, end)`` in one state."""

    start: int
    end: int
    state: PageState = PageState.PRESENT

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Hole:
    """Bytes ``[start, end)`` a read could not return, and why."""

    start: int
    end: int
    state: PageState
    reason: str = ""


class MemoryMissing(Exception):
    """A read touched memory the dump does not hold (a typed answer, not a failure).

    ``hole`` is the first missing run; its state says whether the page is outside the dump,
    excluded by the dumper, or lost to truncation.
    """

    def __init__(self, hole: Hole) -> None:
        why = f" ({hole.reason})" if hole.reason else ""
        super().__init__(f"physical 0x{hole.start:x}-0x{hole.end:x} is {hole.state.value}{why}")
        self.hole = hole


@dataclass
class PartialRead:
    """Bytes of a read with missing runs zero-filled *and listed*: never use ``data`` alone."""

    addr: int
    data: bytes
    holes: list[Hole] = field(default_factory=list)

    def missing(self, start: int, size: int) -> Hole | None:
        """The first hole overlapping ``[start, start+size)``, or None if those bytes are real."""
        end = start + size
        for h in self.holes:
            if h.start < end and h.end > start:
                return h
        return None


@dataclass
class DumpInfo:
    """What ``smmu-forensics info`` reports about a dump (JSON-ready)."""

    path: str
    format: str
    codec: str | None
    page_size: int
    ranges: list[MemRange]
    pages: dict[str, int | None]  # counts per PageState name; None where not countable cheaply
    incomplete: bool
    incomplete_reasons: list[str]
    vmcoreinfo: dict[str, str]
    notes: list[str]
    details: dict[str, object] = field(default_factory=dict)


class PhysicalMemory(abc.ABC):
    """Physical memory as one dump holds it.  Subclasses are the format layers."""

    #: path of the (first) file, for messages
    path: str
    #: the granule the format tracks presence in (kdump block_size, 4 KiB for ELF/raw)
    page_size: int = 4096
    #: short format name ("elf64", "kdump", "flattened+kdump", "lime", "raw")
    format_name: str = "?"

    @abc.abstractmethod
    def read_partial(self, addr: int, size: int) -> PartialRead:
        """Read ``size`` bytes at ``addr``; missing runs are zero-filled and listed in ``holes``."""

    @abc.abstractmethod
    def page_state(self, addr: int) -> PageState:
        """The state of the page (of :attr:`page_size`) holding ``addr``."""

    @abc.abstractmethod
    def ranges(self) -> list[MemRange]:
        """Physical ranges the dump covers, merged, in address order, with their state."""

    @abc.abstractmethod
    def info(self) -> DumpInfo:
        """Format, codec, ranges, page counts, incomplete flag, VMCOREINFO highlights."""

    def vmcoreinfo(self) -> dict[str, str]:
        """The VMCOREINFO note as key/value pairs (empty if the dump has none)."""
        return {}

    def scan_chunks(self, chunk: int = 8 << 20, overlap: int = 64) -> Iterator[tuple[int, bytes | memoryview, int]]:
        """Every readable byte, in (address, buffer, owned) pieces for a search: ``buffer`` holds
        ``owned`` bytes of the piece plus up to ``overlap`` bytes after it (so a pattern that
        straddles two pieces is seen whole once).  Memory the dump lacks reads as zeros here,
        which a search for non-zero patterns never matches.  Layers that can skip more (a sparse
        file's holes) or copy less (a memory map) do so."""
        for r in self.ranges():
            if not r.state.readable:
                continue
            a = r.start
            while a < r.end:
                n = min(chunk, r.end - a)
                yield a, self.read_partial(a, n + overlap).data, n
                a += n

    def read(self, addr: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``addr``, or :class:`MemoryMissing` for the first hole."""
        r = self.read_partial(addr, size)
        if r.holes:
            raise MemoryMissing(r.holes[0])
        return r.data

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files; the layer is unusable afterwards."""

    def __enter__(self) -> PhysicalMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_ranges(ranges: list[MemRange]) -> list[MemRange]:
    """Sort and merge adjacent or overlapping ranges of the same state."""
    out: list[MemRange] = []
    for r in sorted(ranges, key=lambda r: (r.start, r.end)):
        if r.end <= r.start:
            continue
        if out and out[-1].state == r.state and r.start <= out[-1].end:
            if r.end > out[-1].end:
                out[-1] = MemRange(out[-1].start, r.end, r.state)
            continue
        out.append(r)
    return out


def parse_vmcoreinfo(blob: bytes) -> dict[str, str]:
    """Parse a VMCOREINFO note (``KEY=value`` lines); undecodable bytes become U+FFFD."""
    out: dict[str, str] = {}
    text = blob.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    for line in text.splitlines()[:4096]:
        key, sep, value = line.partition("=")
        if sep and key:
            out[key[:128]] = value[:256]
    return out


VMCOREINFO_HIGHLIGHTS = (
    "OSRELEASE",
    "BUILD-ID",
    "PAGESIZE",
    "CRASHTIME",
    "KERNELOFFSET",
    "NUMBER(VA_BITS)",
    "NUMBER(PHYS_OFFSET)",
    "NUMBER(kimage_voffset)",
    "NUMBER(TCR_EL1_T1SZ)",
    "SYMBOL(swapper_pg_dir)",
)

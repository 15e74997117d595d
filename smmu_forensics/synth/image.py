"""A sparse physical-memory image: RAM ranges, written pages, and pages a dumper would exclude.

Pages never written read as zero.  ``excluded`` ranges model makedumpfile's filtering (they are
left out of every format that can express it: kdump bitmaps, ELF p_filesz < p_memsz).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class MemoryImage:
    page_size: int = 4096
    ram: list[tuple[int, int]] = field(default_factory=list)  # (start, size), page aligned
    excluded: list[tuple[int, int]] = field(default_factory=list)
    pages: dict[int, bytearray] = field(default_factory=dict)  # pfn -> bytes
    vmcoreinfo: dict[str, str] = field(default_factory=dict)
    symbols: dict[str, int] = field(default_factory=dict)  # kernel symbols (runtime = link-time: KERNELOFFSET 0) for OUT.System.map

    def in_ram(self, addr: int, size: int = 1) -> bool:
        return any(s <= addr and addr + size <= s + n for s, n in self.ram)

    def write(self, addr: int, data: bytes) -> None:
        """Write bytes (anywhere: a write outside RAM models a table outside the dump)."""
        ps = self.page_size
        pos = 0
        while pos < len(data):
            a = addr + pos
            pfn, off = divmod(a, ps)
            n = min(ps - off, len(data) - pos)
            page = self.pages.get(pfn)
            if page is None:
                page = self.pages[pfn] = bytearray(ps)
            page[off : off + n] = data[pos : pos + n]
            pos += n

    def read(self, addr: int, size: int) -> bytes:
        ps = self.page_size
        out = bytearray(size)
        pos = 0
        while pos < size:
            pfn, off = divmod(addr + pos, ps)
            n = min(ps - off, size - pos)
            page = self.pages.get(pfn)
            if page is not None:
                out[pos : pos + n] = page[off : off + n]
            pos += n
        return bytes(out)

    def page(self, pfn: int) -> bytes:
        p = self.pages.get(pfn)
        return bytes(p) if p is not None else bytes(self.page_size)

    def is_excluded(self, pfn: int) -> bool:
        a = pfn * self.page_size
        return any(s <= a < s + n for s, n in self.excluded)

    def ram_pfns(self) -> Iterator[int]:
        ps = self.page_size
        for s, n in sorted(self.ram):
            yield from range(s // ps, (s + n) // ps)

    @property
    def max_pfn(self) -> int:
        return max((s + n) // self.page_size for s, n in self.ram) if self.ram else 0

"""DMA maps as people ask about them: merged ranges, one IOVA's translation, who reaches a PA.

Decoding only, over the walks of :mod:`smmu_forensics.smmu.reach`:

- :func:`merge` folds a walk's leaves into contiguous ranges (IOVA and PA both contiguous, same
  permission and page size), the listing a user reads;
- :func:`translate_iova` follows one IOVA through a context's tables level by level (crash's
  ``vtop`` for an IO page table), reading the dump again, so it answers even where the walk's
  budget stopped;
- :func:`reaching` lists every leaf of every walk that maps a physical address.

>>> from smmu_forensics.smmu.pgtable import Leaf
>>> [str(r) for r in merge([Leaf(0x1000, 0x8000, 4096, 3, True), Leaf(0x2000, 0x9000, 4096, 3, True),
...                         Leaf(0x3000, 0xa000, 4096, 3, False)])]
['0x1000-0x2fff -> 0x8000-0x9fff rw 2x4K', '0x3000-0x3fff -> 0xa000-0xafff ro 1x4K']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu.pgtable import Leaf, PgWalk, Translation, translate
from smmu_forensics.smmu.reach import DmaReach

__all__ = ["Range", "Hit", "merge", "translate_iova", "reaching", "size_name"]


def size_name(n: int) -> str:
    """A page or block size as people write it.

    >>> size_name(4096), size_name(2 << 20), size_name(1 << 30), size_name(3000)
    ('4K', '2M', '1G', '3000')
    """
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


@dataclass(frozen=True)
class Range:
    """Contiguous leaves: ``pages`` leaves of ``page_size`` bytes from ``iova`` to ``pa``."""

    iova: int
    pa: int
    page_size: int
    pages: int
    writable: bool

    @property
    def size(self) -> int:
        return self.page_size * self.pages

    def __str__(self) -> str:
        return (f"{self.iova:#x}-{self.iova + self.size - 1:#x} -> {self.pa:#x}-{self.pa + self.size - 1:#x} "
                f"{'rw' if self.writable else 'ro'} {self.pages}x{size_name(self.page_size)}")


def merge(leaves: Iterable[Leaf]) -> list[Range]:
    """Leaves (in IOVA order, as a walk records them) folded into contiguous ranges."""
    out: list[Range] = []
    cur: Range | None = None
    for lf in leaves:
        if (cur is not None and lf.size == cur.page_size and lf.writable == cur.writable
                and lf.iova == cur.iova + cur.size and lf.pa == cur.pa + cur.size):
            cur = Range(cur.iova, cur.pa, cur.page_size, cur.pages + 1, cur.writable)
            continue
        if cur is not None:
            out.append(cur)
        cur = Range(lf.iova, lf.pa, lf.size, 1, lf.writable)
    if cur is not None:
        out.append(cur)
    return out


def translate_iova(mem: PhysicalMemory, walk: PgWalk, iova: int) -> Translation:
    """``iova`` through the tables ``walk`` started from (same root, granule, start level, stage).

    >>> from smmu_forensics.dumps.sniff import open_dump
    >>> from smmu_forensics.smmu.pgtable import walk_stage1
    >>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
    ...     t = translate_iova(mem, walk_stage1(mem, ttb=0x4820e000, t0sz=16, tg=0), 0xffffa123)
    >>> hex(t.pa), t.writable, len(t.steps)
    ('0x431cf123', True, 4)
    """
    if not walk.granule:
        return Translation(iova, why="the context's granule is reserved: every access faults")
    if iova >> walk.ias:
        return Translation(iova, why=f"IOVA {iova:#x} is beyond the context's {walk.ias}-bit input size: translation fault")
    return translate(mem, walk.root, iova, walk.ias, walk.granule.bit_length() - 1, walk.stage, walk.start_level)


@dataclass(frozen=True)
class Hit:
    """One mapping of a physical address: through ``context``, IOVA ``iova`` reaches it."""

    context: DmaReach
    leaf: Leaf
    iova: int  # the IOVA of the asked address itself

    @property
    def writable(self) -> bool:
        return self.leaf.writable


def reaching(contexts: Sequence[DmaReach], pa: int) -> list[Hit]:
    """Every leaf of every walked context whose output covers ``pa`` (as far as the walks recorded:
    a truncated walk, ``walk.truncated``, may hide more)."""
    out = []
    for c in contexts:
        if c.walk is None:
            continue
        for lf in c.walk.leaves:
            if lf.pa <= pa < lf.pa + lf.size:
                out.append(Hit(c, lf, lf.iova + (pa - lf.pa)))
    return out

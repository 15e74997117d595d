"""Walk VMSAv8-64 (LPAE) stage-1 IO page tables: what in-flight DMA through a CD can reach.

Arithmetic from Linux io-pgtable-arm.c ([LP] in smmuv3-layouts.md section 6): ``bits_per_level =
pg_shift - 3``, ``levels = DIV_ROUND_UP(ias - pg_shift, bits_per_level)``, start level
``4 - levels``; descriptor type bits[1:0]: 0b11 table (levels 0-2) / page (level 3), 0b01 block
(levels 1-2) / reserved (level 3), 0bx0 invalid.  Output address bits [47:granule]
(``ARM_LPAE_PTE_ADDR_MASK``).  Stage-1 AP[2] (bit 7) set = read-only.  Bounded: at most
``max_tables`` tables and ``max_leaves`` recorded leaves per walk; a table seen twice is a loop
or a shared table and is not walked again.

    >>> w = walk_stage1(mem, ttb=0x4820e000, t0sz=16, tg=0)   # doctest: +SKIP
    >>> [(hex(l.iova), hex(l.pa)) for l in w.leaves][:1]
    [('0xffffa000', '0x431cf000')]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu.fields import genmask

GRANULE_SHIFT = {0: 12, 1: 16, 2: 14}  # CD.TG0: 00 4K, 01 64K, 10 16K [S-CD]
PTE_ADDR_MASK = genmask(47, 12)  # ARM_LPAE_PTE_ADDR_MASK
PTE_AP_RDONLY = 1 << 7  # ARM_LPAE_PTE_AP_RDONLY (stage 1)
PTE_AF = 1 << 10


@dataclass
class Leaf:
    iova: int
    pa: int
    size: int
    level: int
    writable: bool


@dataclass
class PgWalk:
    root: int
    granule: int
    start_level: int
    ias: int
    tables: list[tuple[int, int]] = field(default_factory=list)  # (level, pa)
    leaves: list[Leaf] = field(default_factory=list)
    n_leaves: int = 0
    mapped_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    truncated: bool = False


def walk_stage1(mem: PhysicalMemory, ttb: int, t0sz: int, tg: int, max_tables: int = 4096, max_leaves: int = 1 << 16) -> PgWalk:
    pg_shift = GRANULE_SHIFT.get(tg)
    if pg_shift is None:
        w = PgWalk(ttb, 0, 0, 64 - t0sz)
        w.problems.append(f"TG0={tg} is reserved: the SMMU faults every access (C_BAD_CD)")
        return w
    ias = 64 - t0sz
    bpl = pg_shift - 3
    if not 16 <= ias <= 52 + 0:
        w = PgWalk(ttb, 1 << pg_shift, 0, ias)
        w.problems.append(f"T0SZ={t0sz} gives a {ias}-bit input size outside 12..48 (ILLEGAL)")
        return w
    levels = -(-(ias - pg_shift) // bpl)
    start = 4 - levels
    pgd_bits = (ias - pg_shift) - bpl * (levels - 1)
    w = PgWalk(ttb, 1 << pg_shift, start, ias)
    root = ttb & genmask(47, 3) & ~((1 << (pgd_bits + 3)) - 1 if pgd_bits + 3 > 6 else 0x3F)
    seen: set[int] = set()
    stack = [(start, root, 0, 1 << pgd_bits)]
    while stack:
        level, table, base_iova, n = stack.pop()
        if table in seen:
            w.problems.append(f"level-{level} table {table:#x} is referenced twice (a loop or a shared table)")
            continue
        if len(seen) >= max_tables:
            w.truncated = True
            w.problems.append(f"more than {max_tables} tables: walk stopped")
            break
        seen.add(table)
        w.tables.append((level, table))
        r = mem.read_partial(table, n * 8)
        if r.holes:
            h = r.holes[0]
            w.problems.append(f"level-{level} table {table:#x} is {h.state.value} in the dump")
            if len(r.holes) == 1 and h.start <= table and h.end >= table + n * 8:
                continue
        desc = np.frombuffer(r.data, dtype="<u8")
        shift = pg_shift + (3 - level) * bpl
        idx = np.flatnonzero(desc & np.uint64(1))
        for i in idx.tolist():
            if r.missing(table + 8 * i, 8):
                continue
            d = int(desc[i])
            iova = base_iova | (i << shift)
            typ = d & 3
            out = d & PTE_ADDR_MASK & ~((1 << pg_shift) - 1)
            if level < 3 and typ == 3:
                stack.append((level + 1, out, iova, 1 << bpl))
                continue
            if level == 3 and typ == 1:
                w.problems.append(f"reserved level-3 descriptor {d:#x} at {table + 8 * i:#x} (IOVA {iova:#x}): faults")
                continue
            if typ == 1 and (level == 0 or (pg_shift == 16 and level == 1) or (pg_shift == 14 and level == 1)):
                w.problems.append(f"block descriptor at level {level} ({d:#x}) not allowed for this granule: faults")
                continue
            size = 1 << shift
            out &= ~(size - 1)
            w.n_leaves += 1
            w.mapped_bytes += size
            if len(w.leaves) < max_leaves:
                w.leaves.append(Leaf(iova, out, size, level, not d & PTE_AP_RDONLY))
            else:
                w.truncated = True
    w.tables.sort()
    w.leaves.sort(key=lambda leaf: leaf.iova)
    return w

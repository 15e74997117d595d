"""Walk VMSAv8-64 (LPAE) IO page tables: what in-flight DMA through a CD or an S2 STE can reach.

Arithmetic from Linux io-pgtable-arm.c ([LP] in smmuv3-layouts.md section 6): ``bits_per_level =
pg_shift - 3``, ``levels = DIV_ROUND_UP(ias - pg_shift, bits_per_level)``, start level
``4 - levels``; descriptor type bits[1:0]: 0b11 table (levels 0-2) / page (level 3), 0b01 block
(levels 1-2) / reserved (level 3), 0bx0 invalid.  Output address bits [47:granule]
(``ARM_LPAE_PTE_ADDR_MASK``).  Stage-1 AP[2] (bit 7) set = read-only.  Bounded: at most
``max_tables`` tables and ``max_leaves`` recorded leaves per walk; a table seen twice is a loop
or a shared table and is not walked again.

    >>> from smmu_forensics.dumps.sniff import open_dump
    >>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
    ...     w = walk_stage1(mem, ttb=0x4820e000, t0sz=16, tg=0)
    >>> [(hex(leaf.iova), hex(leaf.pa)) for leaf in w.leaves][:1], w.n_leaves
    ([('0xffffa000', '0x431cf000')], 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu.fields import genmask
from smmu_forensics.smmu.lpae import AP_RDONLY, LPAE_S1, S2AP_WRITE, DescType, get

GRANULE_SHIFT = {0: 12, 1: 16, 2: 14}  # CD.TG0: 00 4K, 01 64K, 10 16K [S-CD]
PTE_ADDR_MASK = LPAE_S1.field("OA").mask  # ARM_LPAE_PTE_ADDR_MASK


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
    stage: int = 1
    tables: list[tuple[int, int]] = field(default_factory=list)  # (level, pa)
    leaves: list[Leaf] = field(default_factory=list)
    n_leaves: int = 0
    mapped_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    truncated: bool = False


@dataclass
class Step:
    """One level of a single-address translation: the table read, the index used, the descriptor."""

    level: int
    table: int
    index: int
    desc: int | None  # None: the table is not in the dump


@dataclass
class Translation:
    va: int
    pa: int | None = None
    size: int = 0  # the leaf's size (page or block)
    writable: bool = False
    steps: list[Step] = field(default_factory=list)
    why: str = ""  # why there is no PA (invalid descriptor, missing table, ...)


def translate(mem: PhysicalMemory, root: int, va: int, ias: int, pg_shift: int, stage: int = 1,
              start_level: int | None = None) -> Translation:
    """The translation of one input address through VMSAv8-64 tables at ``root``, level by level
    (like crash's ``vtop``); only the low ``ias`` bits of ``va`` index the tables (a TTBR1 address's
    upper ones are the region, not the index).  ``start_level`` (stage 2's S2SL0) may start above
    the level the input size gives, with up to 16 concatenated tables; by default it follows ``ias``.

    >>> from smmu_forensics.dumps.sniff import open_dump
    >>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
    ...     t = translate(mem, 0x4820e000, 0xffffa000, 48, 12)
    >>> hex(t.pa), t.size, [s.level for s in t.steps]
    ('0x431cf000', 4096, [0, 1, 2, 3])
    """
    bpl = pg_shift - 3
    start = 4 - -(-(ias - pg_shift) // bpl) if start_level is None else start_level
    t = Translation(va)
    table = table_root(root, ias, pg_shift, start)
    for level in range(start, 4):
        shift = pg_shift + (3 - level) * bpl
        width = ias - shift if level == start else bpl
        idx = (va >> shift) & ((1 << width) - 1)
        r = mem.read_partial(table + 8 * idx, 8)
        if r.holes:
            t.steps.append(Step(level, table, idx, None))
            t.why = f"level-{level} table {table:#x} is {r.holes[0].state.value} in the dump"
            return t
        desc = int.from_bytes(r.data, "little")
        t.steps.append(Step(level, table, idx, desc))
        kind = get(LPAE_S1, desc, "TYPE")
        if kind & 1 == 0 or (level == 3 and kind == DescType.BLOCK) or (level == 0 and kind == DescType.BLOCK):
            t.why = f"level-{level} descriptor {desc:#x} is invalid"
            return t
        oa = desc & PTE_ADDR_MASK
        if level == 3 or kind == DescType.BLOCK:
            t.size = 1 << shift
            t.pa = (oa & ~(t.size - 1)) | (va & (t.size - 1))
            t.writable = not desc & AP_RDONLY if stage == 1 else bool(desc & S2AP_WRITE)
            return t
        table = oa & ~((1 << pg_shift) - 1)
    return t


def walk_stage1(mem: PhysicalMemory, ttb: int, t0sz: int, tg: int, max_tables: int = 4096, max_leaves: int = 1 << 16,
                budget: Budget | None = None) -> PgWalk:
    """Stage 1 from a CD: TTB0, T0SZ, TG0 (00 4K, 01 64K, 10 16K).  Start level from the input size."""
    pg_shift = GRANULE_SHIFT.get(tg)
    ias = 64 - t0sz
    if pg_shift is None:
        w = PgWalk(ttb, 0, 0, ias)
        w.problems.append(f"TG0={tg} is reserved: the SMMU faults every access (C_BAD_CD)")
        return w
    if not 16 <= ias <= 52:
        w = PgWalk(ttb, 1 << pg_shift, 0, ias)
        w.problems.append(f"T0SZ={t0sz} gives a {ias}-bit input size outside 16..52 (ILLEGAL)")
        return w
    bpl = pg_shift - 3
    levels = -(-(ias - pg_shift) // bpl)
    return _walk(mem, ttb, ias, pg_shift, 4 - levels, 1, max_tables, max_leaves, budget)


def walk_stage2(mem: PhysicalMemory, s2ttb: int, s2t0sz: int, s2sl0: int, s2tg: int,
                max_tables: int = 4096, max_leaves: int = 1 << 16, budget: Budget | None = None) -> PgWalk:
    """Stage 2 from an STE: S2TTB, S2T0SZ, S2SL0, S2TG (00 4K, 01 64K, 10 16K).

    Start level (QEMU get_start_level(), Arm ARM D8-12/D8-22/D8-31): 4 KiB ``2 - SL0``, 16/64 KiB
    ``3 - SL0``; the start level may be up to 16 concatenated tables, contiguous from S2TTB.
    """
    pg_shift = GRANULE_SHIFT.get(s2tg)
    ias = 64 - s2t0sz
    if pg_shift is None or s2sl0 == 3:
        w = PgWalk(s2ttb, 0, 0, ias, 2)
        w.problems.append(f"S2TG={s2tg}/S2SL0={s2sl0} is reserved or unsupported: the STE is ILLEGAL (C_BAD_STE)")
        return w
    start = (2 if pg_shift == 12 else 3) - s2sl0
    bpl = pg_shift - 3
    shift = pg_shift + (3 - start) * bpl
    if start < 0 or not 16 <= ias <= 52 or ias - shift > bpl + 4:  # more than 16 concatenated tables
        w = PgWalk(s2ttb, 1 << pg_shift, max(start, 0), ias, 2)
        w.problems.append(f"S2T0SZ={s2t0sz} with S2SL0={s2sl0} is inconsistent: the STE is ILLEGAL (C_BAD_STE)")
        return w
    return _walk(mem, s2ttb, ias, pg_shift, start, 2, max_tables, max_leaves, budget)


class Budget:
    """What all the walks of one report may still spend (tables read, leaves recorded)."""

    def __init__(self, tables: int = 8192, leaves: int = 1 << 16) -> None:
        self.tables, self.leaves = tables, leaves


def table_root(ttb: int, ias: int, pg_shift: int, start: int) -> int:
    """The starting table's address from a TTB: bits [47:4], aligned down to the table's own size
    (the low bits below it are treated as 0; Arm ARM D8.2.5 "Translation table base address")."""
    start_shift = pg_shift + (3 - start) * (pg_shift - 3)
    n_start = 1 << max(ias - start_shift, 0)  # entries of the starting level (maybe concatenated tables)
    return ttb & genmask(47, 4) & ~(max(64, n_start * 8) - 1)


def _walk(mem: PhysicalMemory, ttb: int, ias: int, pg_shift: int, start: int, stage: int,
          max_tables: int, max_leaves: int, budget: Budget | None = None) -> PgWalk:
    budget = budget or Budget(max_tables, max_leaves)
    bpl = pg_shift - 3
    start_shift = pg_shift + (3 - start) * bpl
    n_start = 1 << max(ias - start_shift, 0)  # entries of the starting level (maybe concatenated tables)
    w = PgWalk(ttb, 1 << pg_shift, start, ias, stage)
    root = table_root(ttb, ias, pg_shift, start)
    seen: set[int] = set()
    stack = [(start, root, 0, n_start)]
    while stack:
        level, table, base_iova, n = stack.pop()
        if table in seen:
            w.problems.append(f"level-{level} table {table:#x} is referenced twice (a loop or a shared table)")
            continue
        if len(seen) >= max_tables or budget.tables <= 0:
            w.truncated = True
            w.problems.append(f"table budget spent ({len(seen)} tables in this walk): walk stopped")
            break
        seen.add(table)
        budget.tables -= 1
        w.tables.append((level, table))
        _visit(mem, w, stack, level, table, base_iova, n, pg_shift, stage, max_leaves, budget)
    w.tables.sort()
    w.leaves.sort(key=lambda leaf: leaf.iova)
    return w


def _visit(mem: PhysicalMemory, w: PgWalk, stack: list[tuple[int, int, int, int]], level: int, table: int, base_iova: int, n: int,
           pg_shift: int, stage: int, max_leaves: int, budget: Budget) -> None:
    """Read one table: push its next-level tables, record its leaves (bounded by the budget)."""
    bpl = pg_shift - 3
    addr_mask = np.uint64(PTE_ADDR_MASK & ~((1 << pg_shift) - 1))
    r = mem.read_partial(table, n * 8)
    if r.holes:
        h = r.holes[0]
        w.problems.append(f"level-{level} table {table:#x} is {h.state.value} in the dump")
        if len(r.holes) == 1 and h.start <= table and h.end >= table + n * 8:
            return
    desc = np.frombuffer(r.data, dtype="<u8")
    known = np.ones(n, dtype=bool)
    for h in r.holes:
        known[max(0, (h.start - table) // 8) : max(0, -(-(h.end - table) // 8))] = False
    typ = desc & np.uint64(LPAE_S1.field("TYPE").mask)
    shift = pg_shift + (3 - level) * bpl
    idx = np.arange(n, dtype=np.uint64)
    if level < 3:
        for i in np.flatnonzero(known & (typ == DescType.TABLE_OR_PAGE)).tolist():
            stack.append((level + 1, int(desc[i] & addr_mask), base_iova | (i << shift), 1 << bpl))
        leaf = known & (typ == DescType.BLOCK)
        if level == 0 or (pg_shift != 12 and level == 1):
            bad = np.flatnonzero(leaf)
            if len(bad):
                w.problems.append(f"{len(bad)} block descriptor(s) at level {level} in {table:#x}, not allowed for this granule: faults")
            leaf = np.zeros(n, dtype=bool)
    else:
        leaf = known & (typ == DescType.TABLE_OR_PAGE)
        reserved = np.flatnonzero(known & (typ == DescType.BLOCK))
        if len(reserved):
            w.problems.append(f"{len(reserved)} reserved level-3 descriptor(s) in {table:#x}: fault")
    sel = np.flatnonzero(leaf)
    if not len(sel):
        return
    size = 1 << shift
    w.n_leaves += len(sel)
    w.mapped_bytes += len(sel) * size
    take = sel[: max(0, min(budget.leaves, max_leaves - len(w.leaves)))]
    if len(take) < len(sel):
        w.truncated = True
    budget.leaves -= len(take)
    d = desc[take]
    outs = (d & addr_mask & ~np.uint64(size - 1)).tolist()
    wr = ((d & np.uint64(AP_RDONLY)) == 0) if stage == 1 else ((d & np.uint64(S2AP_WRITE)) != 0)
    for i, out, x in zip(idx[take].tolist(), outs, wr.tolist()):
        w.leaves.append(Leaf(base_iova | (int(i) << shift), out, size, level, bool(x)))

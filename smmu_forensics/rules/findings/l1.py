"""L1 descriptors as the hardware sees them: reserved spans, NULL or misaligned L2Ptrs, RES0 bits,
aliased and overlapping L2 tables, L2 tables missing from the dump."""

from __future__ import annotations

from smmu_forensics.rules.findings.collect import Collector, Severity
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.states import L1Status, L2State
from smmu_forensics.smmu.table import L1Entry, StreamTable

__all__ = ["check"]

L1_RES0 = L.L1STD.res0_mask()  # bit 5 and bits 63:56 [S-L1STD]


def check(t: StreamTable, out: Collector) -> None:
    g = t.geometry
    l1_end = g.base + g.l1_bytes
    spans = []
    for e in t.l1:
        if e.raw is None:
            continue
        where = f"L1[{e.index}]"
        _descriptor(e, g.eff_split, where, out)
        if e.alias_of is not None:
            out.add("L1-ALIAS", Severity.WARNING, where, f"points at the same L2 table {e.l2ptr:#x} as L1[{e.alias_of}]: SIDs alias")
        if e.l2_state in (L2State.MISSING, L2State.PARTIAL) and e.l2_hole is not None:
            h = e.l2_hole
            out.add("MEM-L2-MISSING", Severity.ERROR, where,
                    f"L2 table at {e.l2ptr:#x}: bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")
        if e.n_stes and e.l2ptr:
            a, b = e.l2ptr, e.l2ptr + e.n_stes * L.STE_BYTES
            if a < l1_end and b > g.base:
                out.add("L1-L2-OVERLAPS-L1", Severity.ERROR, where, f"L2 table {a:#x}-{b:#x} overlaps the L1 table")
            if e.alias_of is None:
                spans.append((a, b, e.index))
    spans.sort()
    for (a1, b1, i1), (a2, _b2, i2) in zip(spans, spans[1:]):
        if a2 < b1:
            out.add("L1-L2-OVERLAP", Severity.WARNING, f"L1[{i2}]", f"L2 table {a2:#x} overlaps L1[{i1}]'s L2 table {a1:#x}-{b1:#x}")


def _descriptor(e: L1Entry, split: int, where: str, out: Collector) -> None:
    assert e.raw is not None
    if e.status is L1Status.RESERVED_SPAN:
        out.add("L1-SPAN-RESERVED", Severity.WARNING, where, f"Span {e.span} is reserved: the SMMU treats it as invalid (0)")
    elif e.status is L1Status.SPAN_OUT_OF_BOUNDS:
        out.add("L1-SPAN-OOB", Severity.WARNING, where, f"Span {e.span} is out of bounds for SPLIT {split}: invalid for the SMMU")
    elif e.span and e.span != L.STRTAB_SPLIT + 1 and e.status.points:
        out.add("L1-SPAN-SMALL", Severity.WARNING, where,
                f"Span {e.span}: the SMMU walks a {e.n_stes}-STE L2 table; Linux always writes {L.STRTAB_SPLIT + 1}")
    if e.status is L1Status.NULL_L2PTR:
        out.add("L1-L2PTR-NULL", Severity.ERROR, where, "Span set but L2Ptr 0: the SMMU fetches STEs from physical address 0")
    if e.status is L1Status.MISALIGNED_L2PTR:
        out.add("L1-L2PTR-ALIGN", Severity.WARNING, where,
                f"L2Ptr {e.l2ptr:#x} not aligned to its table size: the SMMU walks {e.l2ptr & ~(e.n_stes * L.STE_BYTES - 1):#x}")
    if e.l2ptr_spec != e.l2ptr:
        out.add("L1-L2PTR-HIGH", Severity.WARNING, where, f"L2Ptr has bits 55:52 set ({e.l2ptr_spec:#x}); Linux masks them off")
    if e.raw & L1_RES0:
        out.add("L1-RES0", Severity.WARNING, where, f"descriptor {e.raw:#x} has RES0 bits set")

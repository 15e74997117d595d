"""Geometry the hardware reads differently from the kernel; table memory missing from the dump."""

from __future__ import annotations

from smmu_forensics.rules.findings.collect import Collector, Severity
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.fields import StrtabFmt
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable

__all__ = ["check"]


def check(regs: Registers, t: StreamTable, out: Collector) -> None:
    g = t.geometry
    if g.fmt not in (StrtabFmt.LINEAR, StrtabFmt.TWO_LEVEL):
        out.add("GEO-FMT-RESERVED", Severity.ERROR, "STRTAB_BASE_CFG.FMT",
                f"FMT={g.fmt} is reserved: the SMMU walks it as linear, every kernel version rejects it")
    if g.fmt == StrtabFmt.TWO_LEVEL and g.split != L.STRTAB_SPLIT:
        legal = g.split in L.STRTAB_LEGAL_SPLITS
        out.add("GEO-SPLIT", Severity.WARNING, "STRTAB_BASE_CFG.SPLIT",
                f"SPLIT={g.split}: " + ("legal for the SMMU but never written by Linux" if legal else "reserved; the SMMU treats it as 6"))
    if regs.sid_bits is not None and g.log2size > regs.sid_bits:
        out.add("GEO-LOG2SIZE", Severity.WARNING, "STRTAB_BASE_CFG.LOG2SIZE",
                f"LOG2SIZE={g.log2size} > SIDSIZE={regs.sid_bits}: the SMMU uses {regs.sid_bits}")
    if g.fmt == StrtabFmt.LINEAR and regs.feat_2lvl:
        out.add("GEO-LINEAR-ON-2LVL", Severity.INFO, "STRTAB_BASE_CFG.FMT",
                "linear table on 2-level-capable hardware: Linux never does this (another OS, an old kernel, or corruption)")
    if g.fmt == StrtabFmt.TWO_LEVEL:
        size = max(64, g.l1_bytes)
        if g.base % size:
            out.add("GEO-BASE-ALIGN", Severity.WARNING, "STRTAB_BASE",
                    f"L1 base {g.base:#x} not aligned to {size:#x}: the SMMU walks {g.base & ~(size - 1):#x}, "
                    "v6/v7 read the unaligned address")
    elif g.n_ste:
        size = g.n_ste * L.STE_BYTES
        if g.base % size:
            out.add("GEO-BASE-ALIGN", Severity.WARNING, "STRTAB_BASE",
                    f"linear base {g.base:#x} not aligned to the table size {size:#x}: the SMMU walks {g.base & ~(size - 1):#x}")
    for h in t.l1_holes[:4]:
        out.add("MEM-L1-MISSING", Severity.ERROR, f"{h.start:#x}",
                f"L1 table bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")
    for why in t.truncated:
        out.add("WALK-TRUNCATED", Severity.WARNING, "table", why)

"""Context descriptors: CD 0 missing or invalid, AArch32 CDs, ASID aliasing, CD tables missing from the dump."""

from __future__ import annotations

from smmu_forensics.rules.findings.collect import Collector, Severity
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.cdtable import CdTable
from smmu_forensics.smmu.fields import get, linux_get
from smmu_forensics.smmu.reach import MAX_CD_TABLES_CHECKED, MAX_CDS_PER_TABLE, Reach
from smmu_forensics.smmu.table import StreamTable

__all__ = ["check"]


def _where(ct: CdTable, j: int) -> str:
    return f"CD {int(ct.addrs[j]):#x} (SSID {int(ct.ssids[j])})"


def check(t: StreamTable, reach: Reach, out: Collector) -> None:
    by_table = reach.by_cd_table
    if len(by_table) > MAX_CD_TABLES_CHECKED:
        out.add("WALK-TRUNCATED", Severity.WARNING, "CD tables", f"{len(by_table)} CD tables: only the first {MAX_CD_TABLES_CHECKED} checked")
    asids: dict[int, tuple[int, int]] = {}
    for key, sids in list(by_table.items())[:MAX_CD_TABLES_CHECKED]:
        ct = t.cd_tables.get(key)
        where = f"SID {sids[0]:#x}" + (f" (+{len(sids) - 1})" if len(sids) > 1 else "")
        if ct is None or ct.not_read:
            continue
        for h in ct.holes[:2]:
            out.add("MEM-CD-MISSING", Severity.ERROR, where, f"CD table bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")
        if not (ct.ssids == 0).any() and not ct.holes:
            out.add("CD-ZERO", Severity.WARNING, where, f"stage-1 STE but CD 0 at {key[0]:#x} is all zero: the SMMU faults (C_BAD_CD)")
        n = min(len(ct.words), MAX_CDS_PER_TABLE)
        rows = ct.words[:n, :2].tolist()  # V, ASID, AA64 in word 0, TTB0 in word 1: plain ints are cheaper than numpy here
        for j, words in enumerate(rows):
            if not get(L.CD, words, "V"):
                if int(ct.ssids[j]) == 0:
                    out.add("CD-INVALID", Severity.WARNING, where, f"{_where(ct, j)} has V=0: DMA without PASID faults (C_BAD_CD)")
                continue
            asid, ttb = get(L.CD, words, "ASID"), linux_get(L.CD, words, "TTB0")
            if asid in asids and asids[asid][1] != ttb:
                out.add("CD-ASID-ALIAS", Severity.WARNING, _where(ct, j), f"ASID {asid} also used with TTB0 {asids[asid][1]:#x}: TLB entries alias")
            asids.setdefault(asid, (int(ct.addrs[j]), ttb))
            if not get(L.CD, words, "AA64"):
                out.add("CD-ILLEGAL-AA64", Severity.WARNING, _where(ct, j), "V=1 with AA64=0: Linux never writes AArch32 CDs")

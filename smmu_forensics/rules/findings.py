"""What is wrong beyond the kernel's checks, and what in-flight DMA could reach.

Checks suggested by the series' reviewers and the spec (adopt-rules.md section 5): register
consistency, geometry the hardware reads differently from the kernel, descriptors the kernel
does not look at, ASID/VMID aliasing, tables outside the dump, and a stage-1 page-table walk
behind every translating STE that flags DMA able to rewrite the adopted tables.

Each finding has a stable ``id``, a ``severity`` (critical / error / warning / info), ``where``
(register, L1 index, SID or address) and a one-line ``message``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector
from smmu_forensics.smmu.fields import get
from smmu_forensics.smmu.pgtable import Budget, PgWalk, walk_stage1, walk_stage2
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable

SEVERITIES = ("critical", "error", "warning", "info")
MAX_PER_KIND = 32  # findings of one id listed before "and N more"
MAX_PGWALKS = 256
MAX_CD_FINDING_TABLES = 4096  # CD tables whose CDs are checked one by one
MAX_CDS_PER_TABLE = 1024


@dataclass
class Finding:
    id: str
    severity: str
    where: str
    message: str


@dataclass
class DmaReach:
    """One translating context: which SIDs use it and what its page tables map."""

    kind: str  # "s1" (CD: asid is the ASID) or "s2" (STE: asid holds the VMID)
    sids: list[int]
    cd_addr: int | None
    asid: int | None
    ttb: int | None
    walk: PgWalk | None


class _Out:
    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._count: dict[str, int] = {}
        self._seen: set[tuple[str, str, str]] = set()
        self.uncounted: set[str] = set()  # kinds whose further findings were not even counted

    def add(self, fid: str, sev: str, where: str, msg: str) -> None:
        key = (fid, where, msg)
        if key in self._seen:
            return
        self._seen.add(key)
        n = self._count.get(fid, 0) + 1
        self._count[fid] = n
        if n <= MAX_PER_KIND:
            self.items.append(Finding(fid, sev, where, msg))

    def full(self, fid: str) -> bool:
        return self._count.get(fid, 0) >= MAX_PER_KIND

    def close(self) -> list[Finding]:
        for fid, n in self._count.items():
            if n > MAX_PER_KIND or fid in self.uncounted:
                sev = next(f.severity for f in self.items if f.id == fid)
                more = "more (not counted)" if fid in self.uncounted else str(n - MAX_PER_KIND) + " more"
                self.items.append(Finding(fid, sev, "-", f"... and {more} {fid} findings"))
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(self.items, key=lambda f: order[f.severity])


def registers(regs: Registers, out: _Out) -> None:
    cr0, ack = regs.get("cr0"), regs.get("cr0ack")
    if cr0 is not None and ack is not None and cr0 != ack:
        out.add("REG-CR0ACK", "warning", "CR0", f"CR0={cr0:#x} but CR0ACK={ack:#x}: an update was in flight at the crash")
    if regs.coherent_override is not None and regs.cohacc is not None and regs.coherent_override != regs.cohacc:
        out.add("REG-COHACC-MISMATCH", "warning", "IDR0.COHACC",
                f"firmware says coherent={regs.coherent_override} but IDR0.COHACC={int(regs.cohacc)}: "
                "tables dirty in CPU caches may not be what the SMMU walks")
    if regs.coherent is False:
        out.add("REG-NONCOHERENT", "error", "coherency",
                "non-coherent SMMU: no version of the series adopts its table; in-flight DMA is aborted by the reset")
    ge, gn = regs.get("gerror"), regs.get("gerrorn")
    if ge is not None:
        active = ge ^ (gn if gn is not None else ge)
        if active & L.GERROR_SFM_ERR:
            out.add("REG-SFM", "error", "GERROR", "SMMU in Service Failure Mode: it no longer translates reliably")
        names = [f.name for f in L.GERROR.fields if not f.reserved and (active >> f.lo) & 1 and f.name != "SFM_ERR"]
        if names:
            out.add("REG-GERROR", "warning", "GERROR", "active global errors: " + ", ".join(names))
    if cr0 is not None and not cr0 & L.CR0_SMMUEN:
        gbpa = regs.get("gbpa")
        if gbpa is not None and not get(L.GBPA, gbpa, "ABORT"):
            out.add("REG-GBPA-BYPASS", "critical", "GBPA",
                    "SMMUEN=0 and GBPA.ABORT=0: every device's DMA bypasses translation and reaches all memory")
    sb = regs.get("strtab_base")
    if sb is not None:
        if sb & L.genmask(55, 52):
            out.add("REG-BASE-HIGH", "warning", "STRTAB_BASE",
                    f"STRTAB_BASE={sb:#x} has address bits 55:52 set: Linux masks them off (GENMASK(51,6)), the SMMU may not")
        oas = regs.get("idr5")
        if oas is not None:
            bits = L.OAS_BITS[get(L.IDR5, oas, "OAS")]
            if get(L.STRTAB_BASE, sb, "ADDR") >> bits:
                out.add("REG-BASE-OAS", "warning", "STRTAB_BASE", f"table address {get(L.STRTAB_BASE, sb, 'ADDR'):#x} is above IDR5.OAS ({bits} bits): RES0")
    idr1 = regs.get("idr1")
    idr0 = regs.get("idr0")
    if idr0 is not None and idr1 is not None and get(L.IDR1, idr1, "SIDSIZE") >= 7 and get(L.IDR0, idr0, "ST_LEVEL") == 0:
        out.add("REG-IDR-INCONSISTENT", "warning", "IDR0/IDR1", "SIDSIZE >= 7 requires IDR0.ST_LEVEL != 0 [S-IDR1]")


def geometry(regs: Registers, t: StreamTable, mem: PhysicalMemory, out: _Out) -> None:
    g = t.geometry
    if g.fmt in (2, 3):
        out.add("GEO-FMT-RESERVED", "error", "STRTAB_BASE_CFG.FMT",
                f"FMT={g.fmt} is reserved: the SMMU walks it as linear, every kernel version rejects it")
    if g.fmt == 1 and g.split != 8:
        legal = g.split in (6, 10)
        out.add("GEO-SPLIT", "warning", "STRTAB_BASE_CFG.SPLIT",
                f"SPLIT={g.split}: " + ("legal for the SMMU but never written by Linux" if legal else "reserved; the SMMU treats it as 6"))
    if regs.sid_bits is not None and g.log2size > regs.sid_bits:
        out.add("GEO-LOG2SIZE", "warning", "STRTAB_BASE_CFG.LOG2SIZE",
                f"LOG2SIZE={g.log2size} > SIDSIZE={regs.sid_bits}: the SMMU uses {regs.sid_bits}")
    if g.fmt == 0 and regs.feat_2lvl:
        out.add("GEO-LINEAR-ON-2LVL", "info", "STRTAB_BASE_CFG.FMT",
                "linear table on 2-level-capable hardware: Linux never does this (another OS, an old kernel, or corruption)")
    if g.fmt == 1:
        size = max(64, g.n_l1 * 8)
        if g.base % size:
            out.add("GEO-BASE-ALIGN", "warning", "STRTAB_BASE",
                    f"L1 base {g.base:#x} not aligned to {size:#x}: the SMMU walks {g.base & ~(size - 1):#x}, "
                    "v6/v7 read the unaligned address")
    elif g.n_ste:
        size = g.n_ste * 64
        if g.base % size:
            out.add("GEO-BASE-ALIGN", "warning", "STRTAB_BASE",
                    f"linear base {g.base:#x} not aligned to the table size {size:#x}: the SMMU walks {g.base & ~(size - 1):#x}")
    for h in t.l1_holes[:4]:
        out.add("MEM-L1-MISSING", "error", f"{h.start:#x}", f"L1 table bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")
    for why in t.truncated:
        out.add("WALK-TRUNCATED", "warning", "table", why)


def l1(t: StreamTable, out: _Out) -> None:
    g = t.geometry
    l1_end = g.base + g.l1_bytes
    spans = []
    for e in t.l1:
        if e.raw is None:
            continue
        where = f"L1[{e.index}]"
        if e.status == "reserved-span":
            out.add("L1-SPAN-RESERVED", "warning", where, f"Span {e.span} is reserved: the SMMU treats it as invalid (0)")
        elif e.status == "span-out-of-bounds":
            out.add("L1-SPAN-OOB", "warning", where, f"Span {e.span} is out of bounds for SPLIT {g.eff_split}: invalid for the SMMU")
        elif e.span and e.span != 9 and e.status in ("valid", "misaligned-l2ptr", "null-l2ptr"):
            out.add("L1-SPAN-SMALL", "warning", where, f"Span {e.span}: the SMMU walks a {e.n_stes}-STE L2 table; Linux always writes 9")
        if e.status == "null-l2ptr":
            out.add("L1-L2PTR-NULL", "error", where, "Span set but L2Ptr 0: the SMMU fetches STEs from physical address 0")
        if e.status == "misaligned-l2ptr":
            out.add("L1-L2PTR-ALIGN", "warning", where,
                    f"L2Ptr {e.l2ptr:#x} not aligned to its table size: the SMMU walks {e.l2ptr & ~(e.n_stes * 64 - 1):#x}")
        if e.l2ptr_spec != e.l2ptr:
            out.add("L1-L2PTR-HIGH", "warning", where, f"L2Ptr has bits 55:52 set ({e.l2ptr_spec:#x}); Linux masks them off")
        if e.raw & (1 << 5 | L.genmask(63, 56)):
            out.add("L1-RES0", "warning", where, f"descriptor {e.raw:#x} has RES0 bits set")
        if e.alias_of is not None:
            out.add("L1-ALIAS", "warning", where, f"points at the same L2 table {e.l2ptr:#x} as L1[{e.alias_of}]: SIDs alias")
        if e.l2_state in ("missing", "partial") and e.l2_hole is not None:
            h = e.l2_hole
            out.add("MEM-L2-MISSING", "error", where, f"L2 table at {e.l2ptr:#x}: bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")
        if e.n_stes and e.l2ptr:
            a, b = e.l2ptr, e.l2ptr + e.n_stes * 64
            if a < l1_end and b > g.base:
                out.add("L1-L2-OVERLAPS-L1", "error", where, f"L2 table {a:#x}-{b:#x} overlaps the L1 table")
            if e.alias_of is None:
                spans.append((a, b, e.index))
    spans.sort()
    for (a1, b1, i1), (a2, _b2, i2) in zip(spans, spans[1:]):
        if a2 < b1:
            out.add("L1-L2-OVERLAP", "warning", f"L1[{i2}]", f"L2 table {a2:#x} overlaps L1[{i1}]'s L2 table {a1:#x}-{b1:#x}")


def stes(regs: Registers, t: StreamTable, out: _Out) -> None:
    if len(t.words) == 0:
        return
    v = t.valid()
    cfg = t.configs()
    sids = t.sids
    for k in np.flatnonzero(v & (cfg >= 1) & (cfg <= 3))[:MAX_PER_KIND + 1].tolist():
        out.add("STE-CFG-RESERVED", "warning", f"SID {int(sids[k]):#x}", f"Config {int(cfg[k])} is reserved (behaves as abort); latest rejects the table")
    byp = np.flatnonzero(v & (cfg == L.STE_CFG_BYPASS))
    if len(byp):
        shown = ", ".join(f"{int(s):#x}" for s in sids[byp[:8]])
        out.add("DMA-BYPASS", "critical", f"{len(byp)} SIDs",
                f"valid bypass STEs (SIDs {shown}{'...' if len(byp) > 8 else ''}): in-flight DMA from them reaches all physical memory")
    idr0 = regs.get("idr0")
    if idr0 is not None:
        s1p, s2p = get(L.IDR0, idr0, "S1P"), get(L.IDR0, idr0, "S2P")
        ill = v & ((((cfg & 5) == 5) & (s1p == 0)) | (((cfg & 6) == 6) & (s2p == 0)))
        for k in np.flatnonzero(ill)[:MAX_PER_KIND + 1].tolist():
            out.add("STE-ILLEGAL-STAGE", "warning", f"SID {int(sids[k]):#x}", f"Config {int(cfg[k])} uses a stage IDR0 lacks: ILLEGAL, behaves as V=0")
        stall = get(L.IDR0, idr0, "STALL_MODEL")
        s1d = vector.field(L.STE, t.words, "S1STALLD")
        for k in np.flatnonzero(v & ((cfg & 5) == 5) & (s1d != 0) & (stall != 0))[:MAX_PER_KIND + 1].tolist():
            out.add("STE-ILLEGAL-S1STALLD", "warning", f"SID {int(sids[k]):#x}", "S1STALLD set while IDR0.STALL_MODEL != 0: ILLEGAL")
    ssid = regs.ssid_bits
    if ssid is not None:
        cdmax = vector.field(L.STE, t.words, "S1CDMAX")
        for k in np.flatnonzero(v & ((cfg & 5) == 5) & (cdmax > ssid))[:MAX_PER_KIND + 1].tolist():
            out.add("STE-ILLEGAL-CDMAX", "warning", f"SID {int(sids[k]):#x}", f"S1CDMax {int(cdmax[k])} > SSIDSIZE {ssid}: ILLEGAL")
    strw = vector.field(L.STE, t.words, "STRW")
    for k in np.flatnonzero(v & ((cfg & 5) == 5) & ((strw & 1) == 1))[:MAX_PER_KIND + 1].tolist():
        out.add("STE-ILLEGAL-STRW", "warning", f"SID {int(sids[k]):#x}", f"STRW={int(strw[k])} is reserved (ILLEGAL)")
    s2 = np.flatnonzero(v & ((cfg == L.STE_CFG_S2) | (cfg == L.STE_CFG_NESTED)))
    if len(s2):
        vm = (t.words[s2, 2] & np.uint64(0xFFFF)).tolist()
        ttb = (t.words[s2, 3] & np.uint64(L.genmask(51, 4))).tolist()
        seen: dict[int, tuple[int, int]] = {}
        for k, vmid, tt in zip(s2.tolist(), vm, ttb):
            if vmid in seen and seen[vmid][1] != tt:
                out.add("STE-VMID-ALIAS", "warning", f"SID {int(sids[k]):#x}",
                        f"VMID {vmid} also used by SID {seen[vmid][0]:#x} with another S2TTB: TLB entries alias")
            seen.setdefault(vmid, (int(sids[k]), tt))
    for h in t.ste_holes[:4]:
        out.add("MEM-STE-MISSING", "error", f"{h.start:#x}", f"STE bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")


def cds_and_dma(mem: PhysicalMemory, regs: Registers, t: StreamTable, out: _Out) -> list[DmaReach]:
    """Check CDs and walk their page tables; flag DMA that can write the adopted tables."""
    reach: list[DmaReach] = []
    if len(t.words) == 0:
        return reach
    v = t.valid()
    cfg = t.configs()
    s1 = np.flatnonzero(v & (cfg == L.STE_CFG_S1))
    by_table: dict[tuple[int, int, int], list[int]] = {}
    w0 = t.words[:, 0]
    for k in s1.tolist():
        x0 = int(w0[k])
        key = (x0 & L.LINUX_STE_S1CTXPTR_MASK, get(L.STE, x0, "S1FMT"), get(L.STE, x0, "S1CDMAX"))
        by_table.setdefault(key, []).append(int(t.sids[k]))
    asids: dict[int, tuple[int, int]] = {}
    tables = _Regions(_table_ranges(t))
    walked: dict[tuple[int, int, int], PgWalk] = {}
    budget = Budget()
    walks = 0
    for n_tab, (key, sids) in enumerate(by_table.items()):
        if n_tab >= MAX_CD_FINDING_TABLES:
            out.add("WALK-TRUNCATED", "warning", "CD tables", f"{len(by_table)} CD tables: only the first {MAX_CD_FINDING_TABLES} checked")
            break
        ct = t.cd_tables.get(key)
        where = f"SID {sids[0]:#x}" + (f" (+{len(sids) - 1})" if len(sids) > 1 else "")
        if ct is None or ct.not_read:
            continue
        for h in ct.holes[:2]:
            out.add("MEM-CD-MISSING", "error", where, f"CD table bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")
        cd0 = np.flatnonzero(ct.ssids == 0)
        if not len(cd0) and not ct.holes:
            out.add("CD-ZERO", "warning", where, f"stage-1 STE but CD 0 at {key[0]:#x} is all zero: the SMMU faults (C_BAD_CD)")
        for j in range(min(len(ct.words), MAX_CDS_PER_TABLE)):
            words = [int(x) for x in ct.words[j]]
            d0 = words[0]
            cdwhere = f"CD {int(ct.addrs[j]):#x} (SSID {int(ct.ssids[j])})"
            if not d0 & L.LINUX_CD_V:
                if int(ct.ssids[j]) == 0:
                    out.add("CD-INVALID", "warning", where, f"{cdwhere} has V=0: DMA without PASID faults (C_BAD_CD)")
                continue
            asid = d0 >> 48
            ttb = words[1] & L.genmask(51, 4)
            if asid in asids and asids[asid][1] != ttb:
                out.add("CD-ASID-ALIAS", "warning", cdwhere, f"ASID {asid} also used with TTB0 {asids[asid][1]:#x}: TLB entries alias")
            asids.setdefault(asid, (int(ct.addrs[j]), ttb))
            if not get(L.CD, d0, "AA64"):
                out.add("CD-ILLEGAL-AA64", "warning", cdwhere, "V=1 with AA64=0: Linux never writes AArch32 CDs")
                continue
            if get(L.CD, d0, "EPD0"):
                continue
            if walks >= MAX_PGWALKS:
                continue
            walks += 1
            key1 = (ttb, get(L.CD, d0, "T0SZ"), get(L.CD, d0, "TG0"))
            pw = walked.get(key1) or walked.setdefault(key1, walk_stage1(mem, *key1, budget=budget))  # CDs often share one root
            reach.append(DmaReach("s1", sids, int(ct.addrs[j]), asid, ttb, pw))
            _check_walk(out, cdwhere, "IOVA", pw, tables)
    s2 = np.flatnonzero(v & ((cfg == L.STE_CFG_S2) | (cfg == L.STE_CFG_NESTED)))
    by_s2: dict[tuple[int, ...], list[int]] = {}
    for k in s2.tolist():
        w2, w3 = int(t.words[k, 2]), int(t.words[k, 3])
        key2 = (w3 & L.genmask(51, 4), get(L.STE, w2, "S2T0SZ"), get(L.STE, w2, "S2SL0"), get(L.STE, w2, "S2TG"), w2 & 0xFFFF)
        by_s2.setdefault(key2, []).append(int(t.sids[k]))
    for (ttb, t0sz, sl0, tg, vmid), sids in by_s2.items():
        if walks >= MAX_PGWALKS:
            break
        walks += 1
        where = f"SID {sids[0]:#x}" + (f" (+{len(sids) - 1})" if len(sids) > 1 else "")
        pw = walk_stage2(mem, ttb, t0sz, sl0, tg, budget=budget)
        reach.append(DmaReach("s2", sids, None, vmid, ttb, pw))
        _check_walk(out, where, "IPA", pw, tables)
    return reach


class _Regions:
    """[start, end) regions with an overlap query in O(buckets * log n + hits).

    Regions are bucketed by the power of two above their length, so within a bucket a region that
    starts more than one bucket-length before the query cannot reach it (a garbage table with one
    huge region must not make every query scan everything).
    """

    def __init__(self, regions: list[tuple[int, int, str]]) -> None:
        buckets: dict[int, list[tuple[int, int, str]]] = {}
        for r in regions:
            buckets.setdefault(max(r[1] - r[0], 1).bit_length(), []).append(r)
        self.buckets = [(1 << k, [a for a, _, _ in rs], rs) for k, rs in ((k, sorted(v)) for k, v in buckets.items())]

    def overlapping(self, a: int, b: int) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        for maxlen, starts, rs in self.buckets:
            i = bisect.bisect_left(starts, a - maxlen + 1)
            j = bisect.bisect_left(starts, b)
            out += [x for x in rs[i:j] if x[1] > a]
        return out


def _check_walk(out: _Out, where: str, space: str, pw: PgWalk, tables: _Regions) -> None:
    """Page-table problems, and writable mappings onto the tables kdump adopts (or onto the walk's own tables)."""
    for p in pw.problems[:8]:
        out.add("PGT-PROBLEM", "warning", where, p)
    own = _Regions([(tb, tb + pw.granule, "a page table") for _, tb in pw.tables])
    for leaf in pw.leaves:
        if not leaf.writable:
            continue
        if out.full("DMA-WRITES-TABLES"):
            out.uncounted.add("DMA-WRITES-TABLES")  # enough listed: the rest is neither spelled out nor counted
            return
        hits = tables.overlapping(leaf.pa, leaf.pa + leaf.size) + own.overlapping(leaf.pa, leaf.pa + leaf.size)
        for a, _, what in hits:
            out.add("DMA-WRITES-TABLES", "critical", where,
                    f"{space} {leaf.iova:#x} maps {what} at {a:#x} writable: in-flight DMA can rewrite what kdump adopts")


def _table_ranges(t: StreamTable) -> list[tuple[int, int, str]]:
    g = t.geometry
    out = []
    if g.fmt == 1:
        out.append((g.base, g.base + g.l1_bytes, "the L1 stream table"))
        for e in t.l1:
            if e.n_stes and e.l2ptr:
                out.append((e.l2ptr, e.l2ptr + e.n_stes * 64, f"the L2 stream table of L1[{e.index}]"))
    elif g.n_ste:
        out.append((g.base, g.base + min(g.n_ste, len(t.words)) * 64, "the stream table"))
    for (ptr, fmt, cdmax), ct in t.cd_tables.items():
        if ptr and not ct.not_read:
            size = (1 << cdmax) * 64 if fmt in (0, 3) else -(-(1 << cdmax) // 1024) * 8
            out.append((ptr, ptr + min(size, 1 << 26), "a CD table"))
    return out


def find(mem: PhysicalMemory | None, regs: Registers, t: StreamTable | None) -> tuple[list[Finding], list[DmaReach]]:
    out = _Out()
    registers(regs, out)
    reach: list[DmaReach] = []
    if t is not None and mem is not None:
        geometry(regs, t, mem, out)
        l1(t, out)
        stes(regs, t, out)
        reach = cds_and_dma(mem, regs, t, out)
    return out.close(), reach

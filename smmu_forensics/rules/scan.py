"""latest's ASID/VMID reservation scan (adopt-rules.md 2.8): every STE of the adopted table.

Runs after a successful geometry adoption.  Walk order: linear, every STE; 2-level, each accepted
L1 entry in index order, its 256 STEs.  Per STE: V=0 skip; Config abort/bypass skip; Config 1-3
rejects; stage-2/nested need a VMID in [1, 2^vmid_bits); stage-1 needs a sane CD table, whose
valid CDs need an ASID in [1, 2^asid_bits).  Any error fails the whole adoption with
"failed to reserve in-use ASIDs/VMIDs" and a full reset.  Vectorised over the whole table.
"""

from __future__ import annotations

import numpy as np

from smmu_forensics.rules.engine import Ctx, Stop
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.table import CdTable

_CFG_NAME = {1: "reserved (1)", 2: "reserved (2)", 3: "reserved (3)"}


def _rows(ctx: Ctx) -> tuple[np.ndarray, str | None]:
    """Indices (into the walked STE arrays) the kernel's scan visits, in its order."""
    t = ctx.table
    assert t is not None
    fmt = t.geometry.fmt
    if fmt == 1:
        accepted = [r.index for r in ctx.v.l1 if r.result == "accept"]
        if not accepted:
            return np.zeros(0, dtype=np.int64), None
        l1idx = (t.sids >> np.uint64(L.STRTAB_SPLIT)).astype(np.int64)
        rows = np.flatnonzero(np.isin(l1idx, np.asarray(accepted, dtype=np.int64)))
        # an aliased L2 is walked once per L1 entry: rows are already per SID
        need = len(accepted) * L.STRTAB_NUM_L2_STES
        missing = None if len(rows) >= need else f"{need - len(rows)} STEs of adopted L2 tables were not walked"
        return rows, missing
    num = getattr(ctx, "num_ste", 0)
    rows = np.flatnonzero(t.sids < np.uint64(num))
    missing = None if len(rows) >= num else f"{num - len(rows)} STEs of the linear table were not walked"
    return rows, missing


def _cd_table_error(ctx: Ctx, ct: CdTable, asid_bits: int | None) -> tuple[str | None, str, bool]:
    """(rule, detail, unknown) for one CD table, first error in the kernel's order."""
    first: tuple[int, int, str, str] | None = None  # (l1 index, sub-order, rule, detail)
    if ct.s1fmt == L.STE_S1FMT_64K_L2 and ctx.rs.scan_l1cd:
        for i, raw, _status in ct.l1:
            if raw is None or not raw & 1:
                continue
            l2 = raw & L.LINUX_L1CD_L2PTR_MASK
            if l2 == 0:
                first = min(first or (1 << 62, 0, "", ""), (i, 0, "SCAN-L1CD-NULL", f"L1CD[{i}] = {raw:#x}: V set, L2Ptr 0"))
            elif l2 % (L.CTXDESC_L2_ENTRIES * L.CD_BYTES):
                first = min(first or (1 << 62, 0, "", ""), (i, 0, "SCAN-L1CD-ALIGN", f"L1CD[{i}] L2Ptr {l2:#x} not 64 KiB aligned"))
    if len(ct.words):
        w0 = ct.words[:, 0]
        valid = (w0 & np.uint64(L.LINUX_CD_V)) != 0
        asid = (w0 >> np.uint64(L.LINUX_CD_ASID_SHIFT)).astype(np.int64)
        if valid.any():
            if asid_bits is None:
                return None, "IDR0.ASID16 (ASID width) not given", True
            bad = valid & ((asid == 0) | (asid >= (1 << asid_bits)))
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                ssid = int(ct.ssids[k])
                cand = (ssid // L.CTXDESC_L2_ENTRIES if ct.s1fmt else 0, 1, "SCAN-CD-ASID",
                        f"CD (SSID {ssid}) at {int(ct.addrs[k]):#x}: ASID {int(asid[k])} (valid range 1..{(1 << asid_bits) - 1})")
                first = min(first, cand) if first else cand
    if first is not None:
        return first[2], first[3], False
    if ct.holes or ct.truncated:
        what = f"CD table at {ct.ptr:#x} is not (all) in the dump" if ct.holes else f"CD table at {ct.ptr:#x} not fully walked"
        return None, what, True
    return None, "", False


def scan(ctx: Ctx) -> Stop | None:
    t = ctx.table
    if t is None:
        return ctx.unknown("SCAN-STE-CFG", "the dump (no memory to scan the STEs)")
    rows, missing = _rows(ctx)
    w = t.words[rows]
    known = t.known[rows]
    w0, w2 = w[:, 0], w[:, 2]
    v = (w0 & np.uint64(1)) != 0
    cfg = ((w0 >> np.uint64(1)) & np.uint64(7)).astype(np.int64)
    n = len(rows)
    rule = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    need_unknown: list[str] = []

    bad_cfg = v & (cfg >= 1) & (cfg <= 3)
    rule[bad_cfg] = "SCAN-STE-CFG"

    s2 = v & ((cfg == L.STE_CFG_S2) | (cfg == L.STE_CFG_NESTED))
    if s2.any():
        vb = ctx.regs.vmid_bits
        if vb is None:
            need_unknown.append("IDR0.VMID16 (VMID width)")
        else:
            vmid = (w2 & np.uint64(L.LINUX_STE_VMID_MASK)).astype(np.int64)
            rule[s2 & ((vmid == 0) | (vmid >= (1 << vb))) & (rule == "")] = "SCAN-VMID"

    s1 = v & (cfg == L.STE_CFG_S1)
    cd_unknown = np.zeros(n, dtype=bool)
    cd_detail: dict[int, str] = {}
    if s1.any():
        ptr = w0 & np.uint64(L.LINUX_STE_S1CTXPTR_MASK)
        cdmax = (w0 >> np.uint64(59)).astype(np.int64)
        s1fmt = ((w0 >> np.uint64(4)) & np.uint64(3)).astype(np.int64)
        open_ = s1 & (rule == "")
        rule[open_ & (ptr == 0)] = "SCAN-CDTAB-NULL"
        ssid_bits = ctx.regs.ssid_bits
        if ssid_bits is None:
            need_unknown.append("IDR1.SSIDSIZE")
        else:
            rule[(rule == "") & s1 & (cdmax > ssid_bits)] = "SCAN-CDTAB-CDMAX"
        rule[(rule == "") & s1 & (s1fmt != L.STE_S1FMT_LINEAR) & (s1fmt != L.STE_S1FMT_64K_L2)] = "SCAN-CDTAB-FMT"
        if ctx.rs.scan_cd2l:
            two = (rule == "") & s1 & (s1fmt == L.STE_S1FMT_64K_L2)
            if two.any():
                cd2l = ctx.regs.cd2l
                if cd2l is None:
                    need_unknown.append("IDR0.CD2L")
                elif not cd2l:
                    rule[two] = "SCAN-CDTAB-CD2L"
        if ctx.rs.scan_cdtab_align:
            lin_size = (np.uint64(1) << cdmax.astype(np.uint64)) * np.uint64(64)
            l2_size = ((np.uint64(1) << cdmax.astype(np.uint64)) + np.uint64(1023)) // np.uint64(1024) * np.uint64(8)
            size = np.where(s1fmt == 0, lin_size, l2_size)
            size = np.maximum(size, np.uint64(1))
            rule[(rule == "") & s1 & ((ptr % size) != 0)] = "SCAN-CDTAB-ALIGN"
        for k in np.flatnonzero((rule == "") & s1 & known).tolist():
            key = (int(ptr[k]), int(s1fmt[k]), int(cdmax[k]))
            ct = t.cd_tables.get(key)
            if ct is None:
                cd_unknown[k] = True
                cd_detail[k] = "CD table not read"
                continue
            r, d, unk = _cd_table_error(ctx, ct, ctx.regs.asid_bits)
            if r:
                rule[k] = r
                detail[k] = d
            elif unk:
                cd_unknown[k] = True
                cd_detail[k] = d
        for k in np.flatnonzero(rule != "").tolist():
            if not detail[k]:
                detail[k] = _describe(str(rule[k]), int(ptr[k]), int(cdmax[k]), int(s1fmt[k]), ssid_bits)
    for k in np.flatnonzero((rule == "SCAN-STE-CFG") | (rule == "SCAN-VMID")).tolist():
        if rule[k] == "SCAN-STE-CFG":
            detail[k] = f"STE.Config={int(cfg[k])} (reserved; HW treats it as abort)"
        else:
            detail[k] = f"S2VMID={int(w2[k] & np.uint64(0xFFFF))} (valid range 1..{(1 << (ctx.regs.vmid_bits or 8)) - 1})"

    bad = (rule != "") & known
    unk = ~known | cd_unknown
    first_bad = int(np.flatnonzero(bad)[0]) if bad.any() else None
    first_unk = int(np.flatnonzero(unk)[0]) if unk.any() else None
    if first_bad is not None:
        sid = int(t.sids[rows[first_bad]])
        if first_unk is not None and first_unk < first_bad:
            ctx.v.notes.append("an earlier STE or CD table of the scan is not in the dump: the kernel may have stopped there first")
        r = str(rule[first_bad])
        n_bad = int(bad.sum())
        more = f" ({n_bad} STEs fail the scan)" if n_bad > 1 else ""
        return ctx.fail(r, "EINVAL", level="dev_warn", detail=f"SID {sid:#x}: {detail[first_bad]}{more}")
    if need_unknown:
        return ctx.unknown("SCAN-STE-CFG", "; ".join(sorted(set(need_unknown))))
    if first_unk is not None:
        sid = int(t.sids[rows[first_unk]])
        why = cd_detail.get(first_unk, "STE not in the dump")
        return ctx.unknown("SCAN-STE-CFG", f"SID {sid:#x}: {why}")
    if missing:
        return ctx.unknown("SCAN-STE-CFG", missing)
    ctx.passed("SCAN", f"{n} STEs scanned, {int(s1.sum())} stage-1, {int(s2.sum())} stage-2/nested")
    return None


def _describe(rule: str, ptr: int, cdmax: int, fmt: int, ssid_bits: int | None) -> str:
    return {
        "SCAN-CDTAB-NULL": "stage-1 STE with S1ContextPtr 0",
        "SCAN-CDTAB-CDMAX": f"S1CDMax {cdmax} > SSIDSIZE {ssid_bits}",
        "SCAN-CDTAB-FMT": f"S1Fmt {fmt} (only linear 0 and 64K_L2 2 are accepted)",
        "SCAN-CDTAB-CD2L": "S1Fmt 64K_L2 but IDR0.CD2L=0",
        "SCAN-CDTAB-ALIGN": f"CD table {ptr:#x} not aligned to its size (S1Fmt {fmt}, S1CDMax {cdmax})",
    }.get(rule, rule)


CHECKS = (scan,)

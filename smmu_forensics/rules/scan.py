"""latest's ASID/VMID reservation scan (adopt-rules.md 2.8): every STE of the adopted table.

Runs after a successful geometry adoption.  Walk order: linear, every STE; 2-level, each accepted
L1 entry in index order, its 256 STEs.  Per STE: V=0 skip; Config abort/bypass skip; Config 1-3
rejects; stage-2/nested need a VMID in [1, 2^vmid_bits); stage-1 needs a sane CD table, whose
valid CDs need an ASID in [1, 2^asid_bits).  Any error fails the whole adoption with
"failed to reserve in-use ASIDs/VMIDs" and a full reset.  Vectorised over the whole table.
"""

from __future__ import annotations

import numpy as np

from smmu_forensics.rules.base import Ctx, L1Outcome, Stop
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector
from smmu_forensics.smmu.cdtable import CdTable, cd_table_bytes
from smmu_forensics.smmu.fields import S1Fmt, SteConfig, StrtabFmt

__all__ = ["scan", "RULES"]

#: the scan's rule IDs, in the order the kernel tests them for one STE
RULES = ("SCAN-STE-CFG", "SCAN-VMID", "SCAN-CDTAB-NULL", "SCAN-CDTAB-CDMAX", "SCAN-CDTAB-FMT", "SCAN-CDTAB-CD2L",
         "SCAN-CDTAB-ALIGN", "SCAN-CD-ASID", "SCAN-L1CD-NULL", "SCAN-L1CD-ALIGN")

_CFG_NAME = {1: "reserved (1)", 2: "reserved (2)", 3: "reserved (3)"}


def _rows(ctx: Ctx) -> tuple[np.ndarray, str | None]:
    """Indices (into the walked STE arrays) the kernel's scan visits, in its order."""
    t = ctx.table
    assert t is not None
    if t.geometry.fmt == StrtabFmt.TWO_LEVEL:
        accepted = [r.index for r in ctx.v.l1 if r.result is L1Outcome.ACCEPT]
        if not accepted:
            return np.zeros(0, dtype=np.int64), None
        l1idx = (t.sids >> np.uint64(L.STRTAB_SPLIT)).astype(np.int64)
        rows = np.flatnonzero(np.isin(l1idx, np.asarray(accepted, dtype=np.int64)))
        # an aliased L2 is walked once per L1 entry: rows are already per SID
        need = len(accepted) * L.STRTAB_NUM_L2_STES
        missing = None if len(rows) >= need else f"{need - len(rows)} STEs of adopted L2 tables were not walked"
        return rows, missing
    num = ctx.num_ste or 0
    rows = np.flatnonzero(t.sids < np.uint64(num))
    missing = None if len(rows) >= num else f"{num - len(rows)} STEs of the linear table were not walked"
    return rows, missing


_CD_V, _CD_ASID = L.CD.field("V"), L.CD.field("ASID")


def _first_bad_asid(words: np.ndarray, asid_bits: int | None) -> tuple[int, int] | int | None:
    """(index, ASID) of the first valid CD whose ASID is outside [1, 2^asid_bits); -1 when a CD is
    valid but the ASID width is unknown; None when every valid CD is fine.  Small tables (most
    have one CD) in plain ints, large ones vectorised."""
    if len(words) <= 16:
        w0 = words[:, _CD_V.word].tolist()
        valid = [(w & _CD_V.mask) != 0 for w in w0]
        asid = [(w & _CD_ASID.mask) >> _CD_ASID.lo for w in w0]
    else:
        valid = (vector.field(L.CD, words, "V") != 0).tolist()
        asid = vector.field(L.CD, words, "ASID").tolist()
    if not any(valid):
        return None
    if asid_bits is None:
        return -1
    top = 1 << asid_bits
    for k, (v, a) in enumerate(zip(valid, asid)):
        if v and not 0 < a < top:
            return k, a
    return None


def _cd_table_error(ctx: Ctx, ct: CdTable, asid_bits: int | None) -> tuple[str | None, str, bool]:
    """(rule, detail, unknown) for one CD table, first error in the kernel's order."""
    first: tuple[int, int, str, str] | None = None  # (l1 index, sub-order, rule, detail)
    if ct.s1fmt == S1Fmt.L2_64K and ctx.rs.scan_checks_l1cd:
        for e in ct.l1:
            i, raw = e.index, e.raw
            if raw is None or not L.get(L.L1CD, raw, "V"):
                continue
            l2 = L.linux_get(L.L1CD, raw, "L2PTR")
            if l2 == 0:
                first = min(first or (1 << 62, 0, "", ""), (i, 0, "SCAN-L1CD-NULL", f"L1CD[{i}] = {raw:#x}: V set, L2Ptr 0"))
            elif l2 % (L.CTXDESC_L2_ENTRIES * L.CD_BYTES):
                first = min(first or (1 << 62, 0, "", ""), (i, 0, "SCAN-L1CD-ALIGN", f"L1CD[{i}] L2Ptr {l2:#x} not 64 KiB aligned"))
    if len(ct.words):
        hit = _first_bad_asid(ct.words, asid_bits)
        if hit == -1:
            return None, "IDR0.ASID16 (ASID width) not given", True
        if isinstance(hit, tuple):
            k, asid_k = hit
            ssid = int(ct.ssids[k])
            cand = (ssid // L.CTXDESC_L2_ENTRIES if ct.s1fmt else 0, 1, "SCAN-CD-ASID",
                    f"CD (SSID {ssid}) at {int(ct.addrs[k]):#x}: ASID {asid_k} (valid range 1..{(1 << (asid_bits or 0)) - 1})")
            first = min(first, cand) if first else cand
    if first is not None:
        return first[2], first[3], False
    if ct.holes or ct.truncated:
        what = f"CD table at {ct.ptr:#x} is not (all) in the dump" if ct.holes else f"CD table at {ct.ptr:#x} not fully walked"
        return None, what, True
    return None, "", False


CODES = ("", *RULES)  # small integer codes for the vectorised scan: 0 = no error
CODE = {r: i for i, r in enumerate(CODES)}


def scan(ctx: Ctx) -> Stop | None:
    """latest's ASID/VMID reservation scan: the first failing STE in the kernel's order."""
    t = ctx.table
    if t is None:
        return ctx.unknown("SCAN-STE-CFG", "the dump (no memory to scan the STEs)")
    rows, missing = _rows(ctx)
    n = len(rows)
    known = t.known[rows]
    w0 = t.words[rows, 0]
    v = vector.field(L.STE, w0, "V") != 0
    cfg = vector.field(L.STE, w0, "CONFIG").astype(np.int8)
    code = np.zeros(n, dtype=np.int8)  # index into CODES: 0 = no error
    detail: dict[int, str] = {}
    need_unknown: list[str] = []

    code[v & (cfg >= SteConfig.RESERVED_1) & (cfg <= SteConfig.RESERVED_3)] = CODE["SCAN-STE-CFG"]

    s2 = np.flatnonzero(v & ((cfg == SteConfig.S2) | (cfg == SteConfig.NESTED)))
    if len(s2):
        vb = ctx.regs.vmid_bits
        if vb is None:
            need_unknown.append("IDR0.VMID16 (VMID width)")
        else:
            vmid = vector.field(L.STE, t.words[rows[s2]], "S2VMID").astype(np.int64)
            sel = (vmid == 0) | (vmid >= (1 << vb))
            code[s2[sel]] = CODE["SCAN-VMID"]
            for k, vm in zip(s2[sel][:1].tolist(), vmid[sel][:1].tolist()):  # the first is the one reported
                detail[k] = f"S2VMID={vm} (valid range 1..{(1 << vb) - 1})"

    s1 = np.flatnonzero(v & (cfg == SteConfig.S1))
    cd_unknown: dict[int, str] = {}
    if len(s1):
        x0 = w0[s1]
        ptr = x0 & np.uint64(L.STE.field("S1CONTEXTPTR").linux_mask)
        cdmax = vector.field(L.STE, x0, "S1CDMAX").astype(np.int64)
        s1fmt = vector.field(L.STE, x0, "S1FMT").astype(np.int64)
        c = np.zeros(len(s1), dtype=np.int8)
        c[ptr == 0] = CODE["SCAN-CDTAB-NULL"]
        ssid_bits = ctx.regs.ssid_bits
        if ssid_bits is None:
            need_unknown.append("IDR1.SSIDSIZE")
        else:
            c[(c == 0) & (cdmax > ssid_bits)] = CODE["SCAN-CDTAB-CDMAX"]
        c[(c == 0) & (s1fmt != S1Fmt.LINEAR) & (s1fmt != S1Fmt.L2_64K)] = CODE["SCAN-CDTAB-FMT"]
        if ctx.rs.scan_checks_cd2l:
            two = (c == 0) & (s1fmt == S1Fmt.L2_64K)
            if two.any():
                cd2l = ctx.regs.cd2l
                if cd2l is None:
                    need_unknown.append("IDR0.CD2L")
                elif not cd2l:
                    c[two] = CODE["SCAN-CDTAB-CD2L"]
        if ctx.rs.scan_checks_cdtab_align:
            # the kernel's table size: linear (1 << cdmax) CDs, 64K_L2 its L1CDs (cd_table_bytes());
            # S1CDMax is a 5-bit field, so the shift stays far below 64
            sizes = np.array([[cd_table_bytes(f, m) for m in range(32)] for f in (S1Fmt.LINEAR, S1Fmt.L2_64K)], dtype=np.uint64)
            size = sizes[(s1fmt != S1Fmt.LINEAR).astype(np.int64), cdmax]
            c[(c == 0) & ((ptr % size) != 0)] = CODE["SCAN-CDTAB-ALIGN"]
        for j in np.flatnonzero(c != 0)[:1].tolist():  # the first CD-table geometry failure, as reported
            detail[int(s1[j])] = _describe(CODES[int(c[j])], int(ptr[j]), int(cdmax[j]), int(s1fmt[j]), ssid_bits)
        ok = known[s1]
        verdicts: dict[tuple[int, int, int], tuple[str | None, str, bool]] = {}
        for j in np.flatnonzero((c == 0) & ok).tolist():
            k = int(s1[j])
            key = (int(ptr[j]), int(s1fmt[j]), int(cdmax[j]))
            if key not in verdicts:  # many STEs share one CD table: judge it once
                ct = t.cd_tables.get(key)
                if ct is None or ct.not_read:
                    verdicts[key] = (None, ct.not_read if ct else "CD table not read", True)
                else:
                    verdicts[key] = _cd_table_error(ctx, ct, ctx.regs.asid_bits)
            r, d, unk = verdicts[key]
            if r:
                c[j] = CODE[r]
                detail[k] = d
            elif unk:
                cd_unknown[k] = d
        code[s1] = np.where(code[s1] != 0, code[s1], c)

    bad = (code != 0) & known
    first_bad = int(np.argmax(bad)) if bad.any() else None
    unk_rows = np.flatnonzero(~known)
    first_unk = int(unk_rows[0]) if len(unk_rows) else None
    if cd_unknown:
        first_cd = min(cd_unknown)
        first_unk = first_cd if first_unk is None else min(first_unk, first_cd)
    if first_bad is not None:
        sid = int(t.sids[rows[first_bad]])
        if first_unk is not None and first_unk < first_bad:
            usid = int(t.sids[rows[first_unk]])
            ctx.uncertain(f"SID {usid:#x} precedes SID {sid:#x} in the scan but "
                          f"{cd_unknown.get(first_unk, 'its STE is not in the dump')}: the kernel may have failed there first")
        r = CODES[int(code[first_bad])]
        why = detail.get(first_bad) or (f"STE.Config={int(cfg[first_bad])} (reserved; HW treats it as abort)" if r == "SCAN-STE-CFG" else r)
        n_bad = int(bad.sum())
        more = f" ({n_bad} STEs fail the scan)" if n_bad > 1 else ""
        return ctx.fail(r, detail=f"SID {sid:#x}: {why}{more}")
    if need_unknown:
        return ctx.unknown("SCAN-STE-CFG", "; ".join(sorted(set(need_unknown))))
    if first_unk is not None:
        sid = int(t.sids[rows[first_unk]])
        return ctx.unknown("SCAN-STE-CFG", f"SID {sid:#x}: {cd_unknown.get(first_unk, 'STE not in the dump')}")
    if missing:
        return ctx.unknown("SCAN-STE-CFG", missing)
    ctx.passed("SCAN", f"{n} STEs scanned, {len(s1)} stage-1, {len(s2)} stage-2/nested")
    return None


def _describe(rule: str, ptr: int, cdmax: int, fmt: int, ssid_bits: int | None) -> str:
    return {
        "SCAN-CDTAB-NULL": "stage-1 STE with S1ContextPtr 0",
        "SCAN-CDTAB-CDMAX": f"S1CDMax {cdmax} > SSIDSIZE {ssid_bits}",
        "SCAN-CDTAB-FMT": f"S1Fmt {fmt} (only linear 0 and 64K_L2 2 are accepted)",
        "SCAN-CDTAB-CD2L": "S1Fmt 64K_L2 but IDR0.CD2L=0",
        "SCAN-CDTAB-ALIGN": f"CD table {ptr:#x} not aligned to its size (S1Fmt {fmt}, S1CDMax {cdmax})",
    }.get(rule, rule)


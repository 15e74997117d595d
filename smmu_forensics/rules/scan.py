"""latest's ASID/VMID reservation scan (adopt-rules.md 2.8): every STE of the adopted table.

Runs after a successful geometry adoption.  Walk order: linear, every STE; 2-level, each accepted
L1 entry in index order, its 256 STEs.  Per STE: V=0 skip; Config abort/bypass skip; Config 1-3
rejects; stage-2/nested need a VMID in [1, 2^vmid_bits); stage-1 needs a sane CD table, whose
valid CDs need an ASID in [1, 2^asid_bits).  Any error fails the whole adoption with
"failed to reserve in-use ASIDs/VMIDs" and a full reset.  Vectorised over the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smmu_forensics.rules.base import Ctx, Stop
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
        accepted = ctx.v.l1.accepted()
        if not len(accepted):
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


@dataclass
class _Scan:
    """The scan's working state over the visited rows (indices into the walked STE arrays)."""

    rows: np.ndarray
    w0: np.ndarray
    known: np.ndarray
    v: np.ndarray
    cfg: np.ndarray
    code: np.ndarray  # index into CODES per row: the row's first failing check; 0 = none
    detail: dict[int, str] = field(default_factory=dict)  # row -> what the failing check saw
    need: list[str] = field(default_factory=list)  # registers a check needed and nobody gave
    need_first: int | None = None  # the first row whose check needed one of them

    def needs(self, what: str, row: int) -> None:
        self.need.append(what)
        self.need_first = row if self.need_first is None else min(self.need_first, row)
    cd_unknown: dict[int, str] = field(default_factory=dict)  # row -> why its CD table could not be judged
    n_s1: int = 0
    n_s2: int = 0


def scan(ctx: Ctx) -> Stop | None:
    """latest's ASID/VMID reservation scan: the first failing STE in the kernel's order."""
    t = ctx.table
    if t is None:
        return ctx.unknown("SCAN-STE-CFG", "the dump (no memory to scan the STEs)")
    rows, missing = _rows(ctx)
    w0 = t.words[rows, 0]
    cfg = vector.field(L.STE, w0, "CONFIG").astype(np.int8)
    st = _Scan(rows, w0, t.known[rows], vector.field(L.STE, w0, "V") != 0, cfg, np.zeros(len(rows), dtype=np.int8))
    st.code[st.v & (cfg >= SteConfig.RESERVED_1) & (cfg <= SteConfig.RESERVED_3)] = CODE["SCAN-STE-CFG"]
    _stage2(ctx, st)
    _stage1(ctx, st)
    return _conclude(ctx, st, missing)


def _stage2(ctx: Ctx, st: _Scan) -> None:
    """SCAN-VMID: stage-2 and nested STEs need a VMID in [1, 2^vmid_bits)."""
    assert ctx.table is not None
    s2 = np.flatnonzero(st.v & ((st.cfg == SteConfig.S2) | (st.cfg == SteConfig.NESTED)))
    st.n_s2 = len(s2)
    if not len(s2):
        return
    vb = ctx.regs.vmid_bits
    if vb is None:
        st.needs("IDR0.VMID16 (VMID width)", int(s2[0]))
        return
    vmid = vector.field(L.STE, ctx.table.words[st.rows[s2]], "S2VMID").astype(np.int64)
    sel = (vmid == 0) | (vmid >= (1 << vb))
    st.code[s2[sel]] = CODE["SCAN-VMID"]
    for k, vm in zip(s2[sel][:1].tolist(), vmid[sel][:1].tolist()):  # the first is the one reported
        st.detail[k] = f"S2VMID={vm} (valid range 1..{(1 << vb) - 1})"


def _stage1(ctx: Ctx, st: _Scan) -> None:
    """Stage-1 STEs: the CD table's geometry (vectorised), then each distinct CD table's contents."""
    assert ctx.table is not None
    s1 = np.flatnonzero(st.v & (st.cfg == SteConfig.S1))
    st.n_s1 = len(s1)
    if not len(s1):
        return
    x0 = st.w0[s1]
    ptr = x0 & np.uint64(L.STE.field("S1CONTEXTPTR").linux_mask)
    cdmax = vector.field(L.STE, x0, "S1CDMAX").astype(np.int64)
    s1fmt = vector.field(L.STE, x0, "S1FMT").astype(np.int64)
    c = _cd_geometry(ctx, st, s1, ptr, cdmax, s1fmt)
    for j in np.flatnonzero(c != 0)[:1].tolist():  # the first CD-table geometry failure, as reported
        st.detail[int(s1[j])] = _describe(CODES[int(c[j])], int(ptr[j]), int(cdmax[j]), int(s1fmt[j]), ctx.regs.ssid_bits)
    verdicts: dict[tuple[int, int, int], tuple[str | None, str, bool]] = {}
    asid_bits = ctx.regs.asid_bits
    for j in np.flatnonzero((c == 0) & st.known[s1]).tolist():
        k = int(s1[j])
        key = (int(ptr[j]), int(s1fmt[j]), int(cdmax[j]))
        if key not in verdicts:  # many STEs share one CD table: judge it once
            ct = ctx.table.cd_tables.get(key)
            if ct is None or ct.not_read:
                verdicts[key] = (None, ct.not_read if ct else "CD table not read", True)
            else:
                verdicts[key] = _cd_table_error(ctx, ct, asid_bits)
        r, d, unk = verdicts[key]
        if r:
            c[j] = CODE[r]
            st.detail[k] = d
        elif unk:
            st.cd_unknown[k] = d
    st.code[s1] = np.where(st.code[s1] != 0, st.code[s1], c)


def _cd_geometry(ctx: Ctx, st: _Scan, s1: np.ndarray, ptr: np.ndarray, cdmax: np.ndarray, s1fmt: np.ndarray) -> np.ndarray:
    """SCAN-CDTAB-*: per stage-1 STE, the first failing geometry check, in the kernel's order."""
    c = np.zeros(len(ptr), dtype=np.int8)
    c[ptr == 0] = CODE["SCAN-CDTAB-NULL"]
    ssid_bits = ctx.regs.ssid_bits
    if ssid_bits is None:
        st.needs("IDR1.SSIDSIZE", int(s1[0]))
    else:
        c[(c == 0) & (cdmax > ssid_bits)] = CODE["SCAN-CDTAB-CDMAX"]
    c[(c == 0) & (s1fmt != S1Fmt.LINEAR) & (s1fmt != S1Fmt.L2_64K)] = CODE["SCAN-CDTAB-FMT"]
    if ctx.rs.scan_checks_cd2l:
        two = (c == 0) & (s1fmt == S1Fmt.L2_64K)
        if two.any():
            cd2l = ctx.regs.cd2l
            if cd2l is None:
                st.needs("IDR0.CD2L", int(s1[np.flatnonzero(two)[0]]))
            elif not cd2l:
                c[two] = CODE["SCAN-CDTAB-CD2L"]
    if ctx.rs.scan_checks_cdtab_align:
        # the kernel's table size: linear (1 << cdmax) CDs, 64K_L2 its L1CDs (cd_table_bytes());
        # S1CDMax is a 5-bit field, so the shift stays far below 64
        sizes = np.array([[cd_table_bytes(f, m) for m in range(32)] for f in (S1Fmt.LINEAR, S1Fmt.L2_64K)], dtype=np.uint64)
        size = sizes[(s1fmt != S1Fmt.LINEAR).astype(np.int64), cdmax]
        c[(c == 0) & ((ptr % size) != 0)] = CODE["SCAN-CDTAB-ALIGN"]
    return c


def _conclude(ctx: Ctx, st: _Scan, missing: str | None) -> Stop | None:
    """The first failing row decides; missing memory before it makes the rule (not the decision) uncertain."""
    assert ctx.table is not None
    sids = ctx.table.sids
    bad = (st.code != 0) & st.known
    first_bad = int(np.argmax(bad)) if bad.any() else None
    unk_rows = np.flatnonzero(~st.known)
    first_unk = int(unk_rows[0]) if len(unk_rows) else None
    if st.cd_unknown:
        first_cd = min(st.cd_unknown)
        first_unk = first_cd if first_unk is None else min(first_unk, first_cd)
    if first_bad is not None:
        sid = int(sids[st.rows[first_bad]])
        if first_unk is not None and first_unk < first_bad:
            usid = int(sids[st.rows[first_unk]])
            ctx.uncertain(f"SID {usid:#x} precedes SID {sid:#x} in the scan but "
                          f"{st.cd_unknown.get(first_unk, 'its STE is not in the dump')}: the kernel may have failed there first")
        if st.need_first is not None and st.need_first < first_bad:
            ctx.uncertain(f"{'; '.join(sorted(set(st.need)))} not given: a check of SID {int(sids[st.rows[st.need_first]]):#x}, "
                          f"before SID {sid:#x}, could not be made")
        r = CODES[int(st.code[first_bad])]
        why = st.detail.get(first_bad) or (
            f"STE.Config={int(st.cfg[first_bad])} (reserved; HW treats it as abort)" if r == "SCAN-STE-CFG" else r)
        n_bad = int(bad.sum())
        more = f" ({n_bad} STEs fail the scan)" if n_bad > 1 else ""
        return ctx.fail(r, detail=f"SID {sid:#x}: {why}{more}")
    if st.need:
        return ctx.unknown("SCAN-STE-CFG", "; ".join(sorted(set(st.need))))
    if first_unk is not None:
        sid = int(sids[st.rows[first_unk]])
        return ctx.unknown("SCAN-STE-CFG", f"SID {sid:#x}: {st.cd_unknown.get(first_unk, 'STE not in the dump')}")
    if missing:
        return ctx.unknown("SCAN-STE-CFG", missing)
    ctx.passed("SCAN", f"{len(st.rows)} STEs scanned, {st.n_s1} stage-1, {st.n_s2} stage-2/nested")
    return None


def _describe(rule: str, ptr: int, cdmax: int, fmt: int, ssid_bits: int | None) -> str:
    return {
        "SCAN-CDTAB-NULL": "stage-1 STE with S1ContextPtr 0",
        "SCAN-CDTAB-CDMAX": f"S1CDMax {cdmax} > SSIDSIZE {ssid_bits}",
        "SCAN-CDTAB-FMT": f"S1Fmt {fmt} (only linear 0 and 64K_L2 2 are accepted)",
        "SCAN-CDTAB-CD2L": "S1Fmt 64K_L2 but IDR0.CD2L=0",
        "SCAN-CDTAB-ALIGN": f"CD table {ptr:#x} not aligned to its size (S1Fmt {fmt}, S1CDMax {cdmax})",
    }.get(rule, rule)


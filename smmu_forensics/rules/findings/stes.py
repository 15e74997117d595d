"""STEs: reserved Configs, ILLEGAL combinations with the IDRs, bypass, VMID aliasing, missing bytes."""

from __future__ import annotations

import numpy as np

from smmu_forensics.rules.findings.collect import MAX_PER_KIND, Collector, Severity
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector
from smmu_forensics.smmu.fields import SteConfig, get
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable

__all__ = ["check"]

_STAGE1 = np.array([SteConfig.S1, SteConfig.NESTED])
_STAGE2 = np.array([SteConfig.S2, SteConfig.NESTED])


def _first(mask: np.ndarray) -> list[int]:
    """Indices of the first MAX_PER_KIND + 1 set entries (enough for the collector to say "more")."""
    return np.flatnonzero(mask)[: MAX_PER_KIND + 1].tolist()


def check(regs: Registers, t: StreamTable, out: Collector) -> None:
    if len(t.words) == 0:
        return
    v = t.valid()
    cfg = t.configs()
    sids = t.sids
    s1 = v & np.isin(cfg, _STAGE1)
    for k in _first(v & (cfg >= SteConfig.RESERVED_1) & (cfg <= SteConfig.RESERVED_3)):
        out.add("STE-CFG-RESERVED", Severity.WARNING, f"SID {int(sids[k]):#x}",
                f"Config {int(cfg[k])} is reserved (behaves as abort); latest rejects the table")
    byp = np.flatnonzero(v & (cfg == SteConfig.BYPASS))
    if len(byp):
        shown = ", ".join(f"{int(s):#x}" for s in sids[byp[:8]])
        out.add("DMA-BYPASS", Severity.CRITICAL, f"{len(byp)} SIDs",
                f"valid bypass STEs (SIDs {shown}{'...' if len(byp) > 8 else ''}): in-flight DMA from them reaches all physical memory")
    idr0 = regs.get("idr0")
    if idr0 is not None:
        ill = (s1 & (get(L.IDR0, idr0, "S1P") == 0)) | (v & np.isin(cfg, _STAGE2) & (get(L.IDR0, idr0, "S2P") == 0))
        for k in _first(ill):
            out.add("STE-ILLEGAL-STAGE", Severity.WARNING, f"SID {int(sids[k]):#x}",
                    f"Config {int(cfg[k])} uses a stage IDR0 lacks: ILLEGAL, behaves as V=0")
        if get(L.IDR0, idr0, "STALL_MODEL") != 0:
            for k in _first(s1 & (vector.field(L.STE, t.words, "S1STALLD") != 0)):
                out.add("STE-ILLEGAL-S1STALLD", Severity.WARNING, f"SID {int(sids[k]):#x}", "S1STALLD set while IDR0.STALL_MODEL != 0: ILLEGAL")
    ssid = regs.ssid_bits
    if ssid is not None:
        cdmax = vector.field(L.STE, t.words, "S1CDMAX")
        for k in _first(s1 & (cdmax > ssid)):
            out.add("STE-ILLEGAL-CDMAX", Severity.WARNING, f"SID {int(sids[k]):#x}", f"S1CDMax {int(cdmax[k])} > SSIDSIZE {ssid}: ILLEGAL")
    strw = vector.field(L.STE, t.words, "STRW")
    for k in _first(s1 & ((strw & 1) == 1)):  # STRW 1 and 3 are reserved [S-STE]
        out.add("STE-ILLEGAL-STRW", Severity.WARNING, f"SID {int(sids[k]):#x}", f"STRW={int(strw[k])} is reserved (ILLEGAL)")
    _vmid_alias(t, v & np.isin(cfg, _STAGE2), out)
    for h in t.ste_holes[:4]:
        out.add("MEM-STE-MISSING", Severity.ERROR, f"{h.start:#x}", f"STE bytes {h.start:#x}-{h.end:#x} are {h.state.value} in the dump ({h.reason})")


def _vmid_alias(t: StreamTable, s2mask: np.ndarray, out: Collector) -> None:
    s2 = np.flatnonzero(s2mask)
    if not len(s2):
        return
    vm = vector.field(L.STE, t.words[s2], "S2VMID").tolist()
    ttb = (t.words[s2, L.STE.field("S2TTB").word] & np.uint64(L.STE.field("S2TTB").linux_mask)).tolist()
    seen: dict[int, tuple[int, int]] = {}
    for k, vmid, tt in zip(s2.tolist(), vm, ttb):
        if vmid in seen and seen[vmid][1] != tt:
            out.add("STE-VMID-ALIAS", Severity.WARNING, f"SID {int(t.sids[k]):#x}",
                    f"VMID {vmid} also used by SID {seen[vmid][0]:#x} with another S2TTB: TLB entries alias")
        seen.setdefault(vmid, (int(t.sids[k]), tt))

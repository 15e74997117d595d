"""What in-flight DMA could reach: the IO page tables behind every translating STE and CD, walked.

Decoding only (judging the walks is :mod:`smmu_forensics.rules.findings.dma`).  Stage 1: one walk
per valid AArch64 CD with EPD0 clear, behind each valid stage-1 STE; stage 2: one walk per
distinct (S2TTB, S2T0SZ, S2SL0, S2TG, VMID) of the valid stage-2 and nested STEs.  Walks that
share a root are done once; all walks of one SMMU share one :class:`~.pgtable.Budget`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.cdtable import pack_keys, unpack_key
from smmu_forensics.smmu.fields import SteConfig, get, linux_get
from smmu_forensics.smmu.pgtable import Budget, PgWalk, walk_stage1, walk_stage2
from smmu_forensics.smmu.table import StreamTable

__all__ = ["DmaReach", "Reach", "s1_contexts", "walk_reach", "MAX_PGWALKS", "MAX_CD_TABLES_CHECKED", "MAX_CDS_PER_TABLE"]

MAX_PGWALKS = 256  # page-table walks per SMMU
MAX_CD_TABLES_CHECKED = 4096  # CD tables whose CDs are looked at one by one
MAX_CDS_PER_TABLE = 1024


@dataclass
class DmaReach:
    """One translating context: which SIDs use it and what its page tables map."""

    stage: int  # 1: a CD (``tag`` is its ASID); 2: an STE (``tag`` is its VMID)
    sids: list[int]
    cd_addr: int | None
    ssid: int | None
    tag: int | None
    ttb: int | None
    walk: PgWalk | None

    @property
    def kind(self) -> str:
        return f"s{self.stage}"


@dataclass
class Reach:
    """Every walk of one SMMU, and how many CD tables there were to look at."""

    contexts: list[DmaReach] = field(default_factory=list)
    #: SIDs of the valid stage-1 STEs by CD table key (ptr, S1Fmt, S1CDMax), in order of first use
    by_cd_table: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)


def s1_contexts(t: StreamTable) -> dict[tuple[int, int, int], list[int]]:
    """The SIDs of the valid stage-1 STEs, grouped by their CD table key (ptr, S1Fmt, S1CDMax)."""
    if len(t.words) == 0:
        return {}
    s1 = np.flatnonzero(t.valid() & (t.configs() == SteConfig.S1))
    if not len(s1):
        return {}
    uniq, first, inv = np.unique(pack_keys(t.words[s1]), return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")  # rows grouped by table, in SID order within a group
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    sids = t.sids[s1][order].tolist()
    keys = [unpack_key(u) for u in uniq.tolist()]
    return {keys[g]: sids[bounds[g] : bounds[g + 1]] for g in np.argsort(first).tolist()}


def walk_reach(mem: PhysicalMemory, t: StreamTable) -> Reach:
    """Walk the page tables of every translating context of ``t`` (bounded by MAX_PGWALKS)."""
    out = Reach()
    if len(t.words) == 0:
        return out
    budget = Budget()
    walked: dict[tuple[int, int, int], PgWalk] = {}
    by_table = out.by_cd_table = s1_contexts(t)
    for key, sids in list(by_table.items())[:MAX_CD_TABLES_CHECKED]:
        ct = t.cd_tables.get(key)
        if ct is None or ct.not_read:
            continue
        for j, words in enumerate(ct.words[: min(len(ct.words), MAX_CDS_PER_TABLE), :2].tolist()):  # V, AA64, EPD0, ASID; TTB0
            if len(out.contexts) >= MAX_PGWALKS:
                break
            if not (get(L.CD, words, "V") and get(L.CD, words, "AA64")) or get(L.CD, words, "EPD0"):
                continue
            ttb = linux_get(L.CD, words, "TTB0")
            key1 = (ttb, get(L.CD, words, "T0SZ"), get(L.CD, words, "TG0"))
            pw = walked.get(key1) or walked.setdefault(key1, walk_stage1(mem, *key1, budget=budget))  # CDs often share one root
            out.contexts.append(DmaReach(1, sids, int(ct.addrs[j]), int(ct.ssids[j]), get(L.CD, words, "ASID"), ttb, pw))
    cfg = t.configs()
    s2 = np.flatnonzero(t.valid() & ((cfg == SteConfig.S2) | (cfg == SteConfig.NESTED)))
    by_s2: dict[tuple[int, ...], list[int]] = {}
    for k in s2.tolist():
        w = [int(x) for x in t.words[k]]
        key2 = (linux_get(L.STE, w, "S2TTB"), get(L.STE, w, "S2T0SZ"), get(L.STE, w, "S2SL0"), get(L.STE, w, "S2TG"),
                linux_get(L.STE, w, "S2VMID"))
        by_s2.setdefault(key2, []).append(int(t.sids[k]))
    for (ttb, t0sz, sl0, tg, vmid), sids in by_s2.items():
        if len(out.contexts) >= MAX_PGWALKS:
            break
        out.contexts.append(DmaReach(2, sids, None, None, vmid, ttb, walk_stage2(mem, ttb, t0sz, sl0, tg, budget=budget)))
    return out

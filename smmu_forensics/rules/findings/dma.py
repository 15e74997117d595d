"""What the walked IO page tables let in-flight DMA do: page-table problems, and writable mappings
onto the tables kdump adopts (stream tables, CD tables) or onto the walk's own page tables."""

from __future__ import annotations

import bisect

from smmu_forensics.rules.findings.collect import Collector, Severity
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.cdtable import cd_table_bytes
from smmu_forensics.smmu.fields import StrtabFmt
from smmu_forensics.smmu.pgtable import PgWalk
from smmu_forensics.smmu.reach import Reach
from smmu_forensics.smmu.table import StreamTable

__all__ = ["check", "Regions"]

MAX_CD_TABLE_REGION = 1 << 26  # a CD table region counted for overlaps is capped at 64 MiB


def check(t: StreamTable, reach: Reach, out: Collector) -> None:
    tables = Regions(_table_ranges(t))
    for r in reach.contexts:
        if r.walk is None:
            continue
        if r.stage == 1:
            where = f"CD {r.cd_addr or 0:#x} (SSID {r.ssid})"
            _check_walk(out, where, "IOVA", r.walk, tables)
        else:
            where = f"SID {r.sids[0]:#x}" + (f" (+{len(r.sids) - 1})" if len(r.sids) > 1 else "")
            _check_walk(out, where, "IPA", r.walk, tables)


class Regions:
    """[start, end) regions with an overlap query in O(buckets * log n + hits).

    Regions are bucketed by the power of two above their length, so within a bucket a region that
    starts more than one bucket-length before the query cannot reach it (a garbage table with one
    huge region must not make every query scan everything).

    >>> Regions([(0x1000, 0x2000, "a"), (0x8000, 0x9000, "b")]).overlapping(0x1800, 0x8001)
    [(4096, 8192, 'a'), (32768, 36864, 'b')]
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


def _check_walk(out: Collector, where: str, space: str, pw: PgWalk, tables: Regions) -> None:
    for p in pw.problems[:8]:
        out.add("PGT-PROBLEM", Severity.WARNING, where, p)
    own = Regions([(tb, tb + pw.granule, "a page table") for _, tb in pw.tables])
    for leaf in pw.leaves:
        if not leaf.writable:
            continue
        if out.full("DMA-WRITES-TABLES"):
            out.uncounted.add("DMA-WRITES-TABLES")  # enough listed: the rest is neither spelled out nor counted
            return
        hits = tables.overlapping(leaf.pa, leaf.pa + leaf.size) + own.overlapping(leaf.pa, leaf.pa + leaf.size)
        for a, _, what in hits:
            out.add("DMA-WRITES-TABLES", Severity.CRITICAL, where,
                    f"{space} {leaf.iova:#x} maps {what} at {a:#x} writable: in-flight DMA can rewrite what kdump adopts")


def _table_ranges(t: StreamTable) -> list[tuple[int, int, str]]:
    g = t.geometry
    out = []
    if g.fmt == StrtabFmt.TWO_LEVEL:
        out.append((g.base, g.base + g.l1_bytes, "the L1 stream table"))
        for e in t.l1:
            if e.n_stes and e.l2ptr:
                out.append((e.l2ptr, e.l2ptr + e.n_stes * L.STE_BYTES, f"the L2 stream table of L1[{e.index}]"))
    elif g.n_ste:
        out.append((g.base, g.base + min(g.n_ste, len(t.words)) * L.STE_BYTES, "the stream table"))
    for (ptr, fmt, cdmax), ct in t.cd_tables.items():
        if ptr and not ct.not_read:
            out.append((ptr, ptr + min(cd_table_bytes(fmt, cdmax), MAX_CD_TABLE_REGION), "a CD table"))
    return out

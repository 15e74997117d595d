"""Context-descriptor tables behind stage-1 STEs [S-L1CD] 5.3, [S-CD] 5.4: read, bounded, typed.

A CD table is keyed by what the STE says of it: (S1ContextPtr as Linux masks it, S1Fmt, S1CDMax).
Only non-zero CDs are kept; memory the dump lacks is recorded as holes.

>>> cd_table_bytes(0, 4), cd_table_bytes(2, 20)
(1024, 8192)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from smmu_forensics.dumps.base import Hole, PartialRead, PhysicalMemory
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector
from smmu_forensics.smmu.fields import S1Fmt, SteConfig, get, linux_get
from smmu_forensics.smmu.states import L1CdStatus

__all__ = ["CdTable", "L1Cd", "read_cd_tables", "pack_keys", "unpack_key", "cd_table_bytes", "MAX_WALK_CDS", "MAX_CD_TABLES"]

MAX_L1CD = 1 << 12  # L1CD descriptors read per CD table (the kernel's maximum is 1024)
MAX_CD_TABLES = 1 << 14  # distinct CD tables read
MAX_WALK_CDS = 1 << 20  # 64 MiB of CDs, over all CD tables
#: CDs per leaf table of a 2-level CD table [S-STE] S1Fmt: 4 KiB or 64 KiB leaves ([LH] CTXDESC_L2_ENTRIES)
CD_LEAF_ENTRIES = {S1Fmt.L2_4K: 4096 // L.CD_BYTES, S1Fmt.L2_64K: L.CTXDESC_L2_ENTRIES}


def cd_table_bytes(s1fmt: int, s1cdmax: int) -> int:
    """Bytes of the table an STE's S1ContextPtr points at: all CDs (linear) or the L1CDs (2-level).

    >>> cd_table_bytes(0, 4), cd_table_bytes(2, 20)
    (1024, 8192)
    """
    n_ctx = 1 << s1cdmax
    if s1fmt in (S1Fmt.LINEAR, S1Fmt.RESERVED):
        return n_ctx * L.CD_BYTES
    return -(-n_ctx // CD_LEAF_ENTRIES[S1Fmt(s1fmt)]) * 8



@dataclass(frozen=True, slots=True)
class L1Cd:
    """One L1 context descriptor read: its index, raw value (None: not in the dump) and status."""

    index: int
    raw: int | None
    status: L1CdStatus


@dataclass
class CdTable:
    """A stage-1 context-descriptor table reached from one or more STEs."""

    ptr: int
    s1fmt: int
    s1cdmax: int
    l1: list[L1Cd] = field(default_factory=list)
    ssids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    addrs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    words: np.ndarray = field(default_factory=lambda: np.zeros((0, 8), dtype=np.uint64))
    holes: list[Hole] = field(default_factory=list)
    truncated: bool = False
    not_read: str = ""  # why the CDs were not read (IPA, geometry the walk does not follow)


def read_cd_tables(mem: PhysicalMemory, words: np.ndarray, valid: np.ndarray, cfg: np.ndarray,
                   truncated: list[str]) -> dict[tuple[int, int, int], CdTable]:
    """Read the CD table behind every valid stage-1 STE (Config 5), keyed by (S1ContextPtr, S1Fmt,
    S1CDMax); nested STEs point at IPAs and are recorded as not read.  Bounded by MAX_CD_TABLES
    tables and MAX_WALK_CDS CDs in all; what the bounds cut is appended to ``truncated``."""
    tables: dict[tuple[int, int, int], CdTable] = {}
    sel = np.flatnonzero(valid & ((cfg == SteConfig.S1) | (cfg == SteConfig.NESTED)))
    if len(sel) == 0:
        return tables
    uniq = _keys_in_scan_order(words[sel], cfg[sel])
    budget = [MAX_WALK_CDS]
    linear = [(p, cd_table_bytes(f, m)) for p, f, m, c in uniq[:MAX_CD_TABLES]
              if p and c == SteConfig.S1 and f in (S1Fmt.LINEAR, S1Fmt.RESERVED)]
    reader = _SpanReader(mem, linear)
    batch = reader.linear_tables(linear) if sum(n for _, n in linear) // L.CD_BYTES <= budget[0] else {}
    if len(uniq) > MAX_CD_TABLES:
        truncated.append(f"{len(uniq)} distinct CD tables; read the first {MAX_CD_TABLES}")
    for n_read, (ptr, fmt, cdmax, c) in enumerate(uniq):
        key = (ptr, fmt, cdmax)
        if n_read >= MAX_CD_TABLES:
            tables[key] = CdTable(*key, not_read=f"more than {MAX_CD_TABLES} CD tables: not read")
            continue
        if c == SteConfig.NESTED:
            tables[key] = CdTable(*key, not_read="nested STE: S1ContextPtr is an IPA (stage-2 input)")
            continue
        pre = batch.get((key[0], cd_table_bytes(key[1], key[2]))) if key[1] in (S1Fmt.LINEAR, S1Fmt.RESERVED) else None
        if pre is not None:
            budget[0] -= 1 << key[2]
            tables[key] = CdTable(*key, ssids=pre[0], addrs=pre[1], words=pre[2])
        else:
            tables[key] = _read_cd_table(reader, key, budget)
    return tables


def _keys_in_scan_order(words: np.ndarray, cfg: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Distinct (ptr, S1Fmt, S1CDMax, Config) of the given STEs, ordered by first use, as the kernel's
    scan meets them: when a bound cuts the reading, it cuts the tables the scan reaches last.
    Config is S1 if any stage-1 STE uses the table (its CDs are then read), else NESTED."""
    uniq, first, inv = np.unique(pack_keys(words), return_index=True, return_inverse=True)
    has_s1 = np.zeros(len(uniq), dtype=bool)
    has_s1[inv.reshape(-1)[cfg == SteConfig.S1]] = True
    order = np.argsort(first, kind="stable")
    return [(*unpack_key(u), int(SteConfig.S1 if s1 else SteConfig.NESTED)) for u, s1 in zip(uniq[order].tolist(), has_s1[order].tolist())]


def pack_keys(words: np.ndarray) -> np.ndarray:
    """Each STE's CD-table key (S1ContextPtr as Linux masks it, S1Fmt, S1CDMax) packed in one uint64:
    the pointer keeps bits 51:6, so S1Fmt goes to bits 53:52 and S1CDMax to 58:54."""
    ptr = words[:, 0] & np.uint64(L.STE.field("S1CONTEXTPTR").linux_mask)
    return ptr | (vector.field(L.STE, words, "S1FMT") << np.uint64(52)) | (vector.field(L.STE, words, "S1CDMAX") << np.uint64(54))


def unpack_key(k: int) -> tuple[int, int, int]:
    """(ptr, S1Fmt, S1CDMax) from :func:`pack_keys`.

    >>> import numpy as np
    >>> w = np.zeros((1, 8), dtype=np.uint64); w[0, 0] = 0x2000_0000_4030_0025  # S1CDMax 4, S1Fmt 2, V
    >>> unpack_key(int(pack_keys(w)[0]))
    (1076887552, 2, 4)
    """
    return k & L.LINUX_STE_S1CTXPTR_MASK, (k >> 52) & 3, (k >> 54) & 31


class _SpanReader:
    """Reads many small tables with few calls: nearby tables are read as one merged span.

    ``read_partial`` on a span it pre-read slices it (holes clipped to the request); anything else
    goes to the memory layer.  Thousands of one-CD tables (a table per device) cost a few reads.
    """

    GAP = 4096  # tables closer than this share a read
    MAX_SPAN = 1 << 22  # bytes per merged read
    MAX_TABLE = 1 << 16  # larger tables are read on their own

    def __init__(self, mem: PhysicalMemory, tables: list[tuple[int, int]]) -> None:
        self.mem = mem
        self.starts: list[int] = []
        self.reads: list[PartialRead] = []
        spans: list[list[int]] = []
        for a, n in sorted(t for t in tables if t[1] <= self.MAX_TABLE):
            if spans and a <= spans[-1][1] + self.GAP and max(spans[-1][1], a + n) - spans[-1][0] <= self.MAX_SPAN:
                spans[-1][1] = max(spans[-1][1], a + n)
            else:
                spans.append([a, a + n])
        for a, b in spans:
            self.starts.append(a)
            self.reads.append(mem.read_partial(a, b - a))

    def linear_tables(self, tables: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ssids, addrs, words) of the non-zero CDs of every linear table wholly in a pre-read span
        with no hole, decoded in one vectorised pass: {(ptr, bytes): ...}."""
        keys: list[tuple[int, int]] = []
        blobs: list[bytes] = []
        for a, n in dict.fromkeys(tables):
            i = bisect.bisect_right(self.starts, a) - 1
            if i < 0 or n > self.MAX_TABLE:
                continue
            r = self.reads[i]
            off = a - r.addr
            if off + n > len(r.data) or any(h.start < a + n and h.end > a for h in r.holes):
                continue
            keys.append((a, n))
            blobs.append(r.data[off : off + n])
        if not keys:
            return {}
        counts = np.array([n // L.CD_BYTES for _, n in keys], dtype=np.int64)
        words = np.frombuffer(b"".join(blobs), dtype="<u8").reshape(-1, L.CD.words)
        table = np.repeat(np.arange(len(keys)), counts)
        first = np.cumsum(counts) - counts
        ssid = np.arange(len(words), dtype=np.int64) - np.repeat(first, counts)
        keep = np.flatnonzero((words[:, 0] != 0) | (words[:, 1] != 0))
        bounds = np.searchsorted(table[keep], np.arange(len(keys) + 1))
        ptrs = np.array([a for a, _ in keys], dtype=np.uint64)
        addrs = np.repeat(ptrs, counts)[keep] + ssid[keep].astype(np.uint64) * np.uint64(L.CD_BYTES)
        ssids, kept = ssid[keep].astype(np.uint32), np.array(words[keep])
        return {k: (ssids[bounds[j] : bounds[j + 1]], addrs[bounds[j] : bounds[j + 1]], kept[bounds[j] : bounds[j + 1]])
                for j, k in enumerate(keys)}

    def read_partial(self, addr: int, size: int) -> PartialRead:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0:
            r = self.reads[i]
            off = addr - r.addr
            if off + size <= len(r.data):
                holes = [Hole(max(h.start, addr), min(h.end, addr + size), h.state, h.reason)
                         for h in r.holes if h.start < addr + size and h.end > addr]
                return PartialRead(addr, r.data[off : off + size], holes)
        return self.mem.read_partial(addr, size)


def _read_cd_table(mem: _SpanReader, key: tuple[int, int, int], budget: list[int]) -> CdTable:
    ptr, fmt, cdmax = key
    ct = CdTable(ptr, fmt, cdmax)
    if ptr == 0:
        ct.not_read = "S1ContextPtr is 0"
        return ct
    n_ctx = 1 << cdmax
    chunks: list[tuple[int, int, int]] = []  # (first ssid, addr, count)
    if fmt in (S1Fmt.LINEAR, S1Fmt.RESERVED):  # 3 is reserved and behaves as linear [S-STE]
        chunks.append((0, ptr, n_ctx))
    else:
        chunks += _read_l1cds(mem, ct, n_ctx)
    ssids, addrs, words = [], [], []
    for first, addr, count in chunks:
        if count > budget[0]:
            ct.truncated = True
            count = budget[0]
        if count <= 0:
            break
        budget[0] -= count
        r = mem.read_partial(addr, count * L.CD_BYTES)
        ct.holes += r.holes
        wds = vector.as_words(r.data, L.CD)
        ok = np.ones(count, dtype=bool)
        for h in r.holes:
            lo = max(0, (h.start - addr) // L.CD_BYTES)
            hi = min(count, -(-(h.end - addr) // L.CD_BYTES))
            ok[lo:hi] = False
        keep = np.flatnonzero(ok & ((wds[:, 0] != 0) | (wds[:, 1] != 0)))
        ssids.append(first + keep.astype(np.uint32))
        addrs.append(np.uint64(addr) + keep.astype(np.uint64) * np.uint64(L.CD_BYTES))
        words.append(np.array(wds[keep]))
    if ssids:
        ct.ssids = np.concatenate(ssids).astype(np.uint32)
        ct.addrs = np.concatenate(addrs).astype(np.uint64)
        ct.words = np.concatenate(words)
    return ct


def _read_l1cds(mem: _SpanReader, ct: CdTable, n_ctx: int) -> list[tuple[int, int, int]]:
    """A 2-level CD table's L1CDs into ``ct.l1``; the leaf tables to read, as (first SSID, address, count)."""
    chunks: list[tuple[int, int, int]] = []
    ptr = ct.ptr
    leaf = CD_LEAF_ENTRIES[S1Fmt(ct.s1fmt)]
    n_l1 = -(-n_ctx // leaf)
    if n_l1 > MAX_L1CD:  # the kernel itself never has more (SSIDSIZE <= 20): 1024 L1CDs
        ct.truncated = True
        n_l1 = MAX_L1CD
    r = mem.read_partial(ptr, n_l1 * 8)
    ct.holes += r.holes
    raws = np.frombuffer(r.data, dtype="<u8")
    known = np.ones(n_l1, dtype=bool)
    for h in r.holes:
        known[max(0, (h.start - ptr) // 8) : max(0, -(-(h.end - ptr) // 8))] = False
    for i in np.flatnonzero(~known)[:64].tolist():
        ct.l1.append(L1Cd(i, None, L1CdStatus.MISSING))
    for i in np.flatnonzero(known & (raws != 0)).tolist():
        raw = int(raws[i])
        if not get(L.L1CD, raw, "V"):
            ct.l1.append(L1Cd(i, raw, L1CdStatus.INVALID))
            continue
        l2 = linux_get(L.L1CD, raw, "L2PTR")
        status = L1CdStatus.NULL_L2PTR if l2 == 0 else (
            L1CdStatus.MISALIGNED_L2PTR if l2 % (leaf * L.CD_BYTES) else L1CdStatus.VALID)
        ct.l1.append(L1Cd(i, raw, status))
        if l2:
            chunks.append((i * leaf, l2, min(leaf, n_ctx)))
    ct.l1.sort(key=lambda x: x.index)
    return chunks

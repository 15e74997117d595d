"""Stream tables found by their shape: the fallback when the kernel's copy of its registers is not
in the dump (a carved dump, a kernel layout nobody taught us), and a corroboration when it is.

What Linux writes (drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c, 6.1 ``arm_smmu_init_l2_strtab`` and
6.12 ``arm_smmu_init_l2_strtab``): each L2 table is one ``dmam_alloc_coherent()`` buffer of
``1 << STRTAB_SPLIT`` STEs (256 x 64 bytes = 16 KiB), every STE of it written before the L1
descriptor is (``arm_smmu_init_bypass_stes`` / ``arm_smmu_init_initial_stes``: abort or bypass, then
each device's STE), and the L1 descriptor is ``L2Ptr | Span (STRTAB_SPLIT + 1)``.  The DMA API
aligns a coherent buffer to the smallest page order that holds it (Documentation/core-api/
dma-api.rst, ``dma_alloc_coherent``), so an L2 is 16 KiB-aligned and an L1 table page-aligned.

So, in the same pass over memory as :mod:`.driver`:

* an **L2 table** is a 16 KiB-aligned run of 256 STEs that are all valid (V=1) with a Config the
  architecture defines (abort, bypass, S1, S2, nested) and clear RES0 bits in their first word,
  which for abort and bypass holds nothing else (6.1 ``arm_smmu_write_strtab_ent`` and 6.12
  ``arm_smmu_make_abort_ste``/``_bypass_ste`` write V and Config alone there);
* an **L1 descriptor** is a word with Span 9, a 16 KiB-aligned L2Ptr inside 52 bits;
* an **L1 table** is a cluster of such descriptors whose L2Ptr lands on a found L2 table; its base
  is the page (or, for a table over a page, the size-aligned block) holding them.

An L1 table's length is not in it: the smallest power of two covering its populated entries, and
never below 256 entries (a 16-bit StreamID space), is taken and said so.  L2-shaped runs no L1
descriptor points at are linear-table candidates.  Candidates are ranked by how many of their L1
descriptors land on L2-shaped tables.

>>> ShapeScan.ste_ok(np.array([1, 9, 3, 0x0100000000000001, 0x11], dtype=np.uint64)).tolist()
[True, True, False, False, False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector
from smmu_forensics.smmu.states import TableFormat

__all__ = ["TableCandidate", "ShapeScan", "L2_BYTES", "MIN_L1_ENTRIES"]

L2_BYTES = L.STRTAB_L2_BYTES  # 16 KiB: 1 << STRTAB_SPLIT STEs [LH]
L2_WORDS = L2_BYTES // 8
STE_WORDS = L.STE_BYTES // 8
SPAN = L.STRTAB_SPLIT + 1  # arm_smmu_write_strtab_l1_desc(): FIELD_PREP(STRTAB_L1_DESC_SPAN, STRTAB_SPLIT + 1)
PAGE = 4096  # arm64 Linux's smallest page: the least alignment of a coherent DMA buffer
MIN_L1_ENTRIES = 256  # a 16-bit StreamID space with SPLIT 8: what the table length is taken as, at least
MAX_L2 = 1 << 14  # L2-shaped blocks kept (256 MiB of tables)
MAX_DESCS = 1 << 16  # L1-descriptor-shaped words kept
MAX_PENDING = 1 << 10
CLUSTER_GAP = 1 << 16  # descriptors further apart than this start another L1 table candidate

_STE_RES0 = np.uint64(L.STE.res0_mask(0))
_CFG_LEGAL = np.array([c in (L.SteConfig.ABORT, L.SteConfig.BYPASS, L.SteConfig.S1, L.SteConfig.S2, L.SteConfig.NESTED)
                       for c in range(8)])
_CFG_BARE = np.array([c in (L.SteConfig.ABORT, L.SteConfig.BYPASS) for c in range(8)])  # Linux writes only V|Config in word 0
_V_CFG = np.uint64(L.STE.field("V").mask | L.STE.field("CONFIG").mask)
_DESC_LOW = np.uint64(L.L1STD.field("SPAN").mask | L.genmask(13, 6))  # Span and the L2Ptr bits a 16 KiB table keeps 0
_L2PTR = np.uint64(L.L1STD.field("L2PTR").linux_mask)
_DESC_CHECK = _DESC_LOW | np.uint64(L.genmask(63, 52))  # and nothing above the 52 bits Linux keeps


@dataclass(frozen=True)
class TableCandidate:
    """A stream table found by shape: its base, format, length, and the evidence."""

    base: int
    fmt: TableFormat
    log2size: int
    l2: tuple[tuple[int, int], ...] = ()  # (L1 index, L2 address) of descriptors landing on an L2-shaped table
    stray: int = 0  # Span-9 descriptors in the table that land on nothing L2-shaped
    covered: int = 0  # highest populated L1 index + 1 (2-level) or STEs in the run (linear)

    @property
    def score(self) -> int:
        """Independent evidence: L1 descriptors landing on L2-shaped tables, less strays."""
        return 2 * len(self.l2) - self.stray if self.fmt is TableFormat.TWO_LEVEL else 1

    def describe(self) -> str:
        if self.fmt is TableFormat.LINEAR:
            return (f"linear table candidate at {self.base:#x}: {self.covered} STEs in 16 KiB-aligned runs of valid, "
                    "well-formed STEs that no L1 descriptor points at")
        return (f"2-level table candidate at {self.base:#x}: {len(self.l2)} L1 descriptor(s) with Span {SPAN} landing on "
                f"L2-shaped tables ({', '.join(f'L1[{i}] -> {a:#x}' for i, a in self.l2[:4])}"
                f"{', ...' if len(self.l2) > 4 else ''}){f', {self.stray} landing elsewhere' if self.stray else ''}; "
                f"LOG2SIZE {self.log2size} taken from the populated entries (at least {MIN_L1_ENTRIES} L1 entries)")


class ShapeScan:
    """Feed it every piece of memory once (:meth:`feed`); :meth:`finish` ranks the candidates."""

    def __init__(self) -> None:
        self.l2: list[int] = []
        self.pending: list[int] = []
        self.desc_addr: list[np.ndarray] = []
        self.desc_val: list[np.ndarray] = []
        self.n_desc = 0
        self.truncated: list[str] = []

    @staticmethod
    def ste_ok(word0: np.ndarray) -> np.ndarray:
        """STE first words that are valid, with a defined Config and clear RES0 bits."""
        flat = word0.reshape(-1)
        cfg = vector.field(L.STE, flat, "CONFIG").astype(np.intp)
        ok = ((flat & np.uint64(1)) == np.uint64(1)) & _CFG_LEGAL[cfg] & ((flat & _STE_RES0) == np.uint64(0))
        ok &= ~_CFG_BARE[cfg] | ((flat & ~_V_CFG) == np.uint64(0))
        return ok.reshape(word0.shape)

    def feed(self, addr: int, w: np.ndarray, owned: int) -> None:
        """``w``: the words at physical ``addr`` (8-aligned); the first ``owned`` words are this
        piece's own (the rest is overlap the next piece starts with)."""
        self._l2(addr, w, owned)
        if self.n_desc >= MAX_DESCS:
            return
        idx = np.flatnonzero((w[:owned] & _DESC_CHECK) == np.uint64(SPAN))  # one pass; the few hits checked further
        idx = idx[(w[idx] & _L2PTR) != np.uint64(0)]
        if len(idx):
            idx = idx[:MAX_DESCS - self.n_desc]
            self.desc_addr.append(np.uint64(addr) + idx.astype(np.uint64) * np.uint64(8))
            self.desc_val.append(w[idx] & _L2PTR)
            self.n_desc += len(idx)
            if self.n_desc >= MAX_DESCS:
                self.truncated.append(f"more than {MAX_DESCS} L1-descriptor-shaped words: the rest not considered")

    def _l2(self, addr: int, w: np.ndarray, owned: int) -> None:
        off = (-addr % L2_BYTES) // 8
        if off >= owned or len(self.l2) >= MAX_L2:
            return
        nb = (len(w) - off) // L2_WORDS
        if nb:
            blocks = w[off:off + nb * L2_WORDS].reshape(nb, L2_WORDS)
            first = np.flatnonzero(self.ste_ok(blocks[:, 0]))
            first = first[off + first * L2_WORDS < owned]
            if len(first):
                whole = self.ste_ok(blocks[first][:, ::STE_WORDS]).all(axis=1)
                self.l2 += [addr + 8 * (off + int(k) * L2_WORDS) for k in first[whole]]
        tail = off + nb * L2_WORDS
        if tail < owned and tail < len(w) and self.ste_ok(w[tail:tail + 1])[0] and len(self.pending) < MAX_PENDING:
            self.pending.append(addr + 8 * tail)
        if len(self.l2) >= MAX_L2:
            self.truncated.append(f"more than {MAX_L2} L2-shaped tables: the rest not considered")

    def finish(self, mem: PhysicalMemory) -> list[TableCandidate]:
        """Every table candidate, best first."""
        for a in self.pending:
            r = mem.read_partial(a, L2_BYTES)
            if not r.holes and self.ste_ok(np.frombuffer(r.data, dtype="<u8")[::STE_WORDS]).all():
                self.l2.append(a)
        l2 = np.array(sorted(set(self.l2)), dtype=np.uint64)  # (np.unique would import numpy.ma: 35 ms)
        out = self._two_level(l2)
        pointed = {a for c in out for _, a in c.l2}
        out += _linear([int(a) for a in l2 if int(a) not in pointed])
        return sorted(out, key=lambda c: (-c.score, c.base))

    def _two_level(self, l2: np.ndarray) -> list[TableCandidate]:
        if not self.desc_addr:
            return []
        addr = np.concatenate(self.desc_addr)
        val = np.concatenate(self.desc_val)
        at = np.minimum(np.searchsorted(l2, val), max(len(l2) - 1, 0))
        lands = (l2[at] == val) if len(l2) else np.zeros(len(val), dtype=bool)
        tables: list[TableCandidate] = []
        hit_addr = addr[lands].tolist()
        for cluster in _clusters(hit_addr):
            tables.append(_table(cluster, addr, val, lands))
        return tables


def _clusters(addrs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for a in sorted(addrs):
        if out and a - out[-1][-1] <= CLUSTER_GAP:
            out[-1].append(a)
        else:
            out.append([a])
    return out


def _table(cluster: list[int], addr: np.ndarray, val: np.ndarray, lands: np.ndarray) -> TableCandidate:
    """The L1 table holding ``cluster``: page-aligned, grown (and re-aligned) until it covers them."""
    n = MIN_L1_ENTRIES
    base = cluster[0] & ~(PAGE - 1)
    while True:
        align = max(PAGE, n * 8)
        base &= ~(align - 1)
        need = (cluster[-1] - base) // 8 + 1
        if need <= n:
            break
        n = 1 << (need - 1).bit_length()
    inside = (addr >= np.uint64(base)) & (addr < np.uint64(base + n * 8))
    l2 = tuple((int(a - base) // 8, int(v)) for a, v in zip(addr[inside & lands].tolist(), val[inside & lands].tolist()))
    stray = int((inside & ~lands).sum())
    return TableCandidate(base, TableFormat.TWO_LEVEL, n.bit_length() - 1 + L.STRTAB_SPLIT, tuple(sorted(l2)), stray,
                          max(i for i, _ in l2) + 1)


def _linear(l2: list[int]) -> list[TableCandidate]:
    """Runs of adjacent L2-shaped blocks no L1 points at: linear tables of their power-of-two prefix."""
    out: list[TableCandidate] = []
    run: list[int] = []
    for a in sorted(l2) + [-1]:
        if run and a == run[-1] + L2_BYTES:
            run.append(a)
            continue
        if run:
            n = 1 << (len(run).bit_length() - 1)
            stes = n * L.STRTAB_NUM_L2_STES
            out.append(TableCandidate(run[0], TableFormat.LINEAR, stes.bit_length() - 1, covered=stes))
        run = [a]
    return out

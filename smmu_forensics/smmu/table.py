"""Walk a stream table through :class:`PhysicalMemory` -> :class:`StreamTable`.

The walk reads what the kernel would read (addresses masked as Linux masks them, GENMASK(51,6))
over the geometry the hardware would use (``LOG2SIZE`` capped at ``IDR1.SIDSIZE``), bounded
whatever the registers claim: at most :data:`MAX_L1_WALK` L1 descriptors, :data:`MAX_WALK_STES`
STEs and :data:`MAX_WALK_CDS` CDs.  Memory the dump lacks is recorded as holes, never as zeros.

Example::

    >>> t = walk(mem, regs)                           # doctest: +SKIP
    >>> t.geometry.format, hex(t.geometry.base), len(t.populated_l1())
    ('2lvl', '0x431be000', 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smmu_forensics.dumps.base import Hole, PageState, PhysicalMemory
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector
from smmu_forensics.smmu.fields import get
from smmu_forensics.smmu.registers import Registers

MAX_L1_WALK = 1 << 20  # 8 MiB of L1 descriptors (the kernel's own maximum is 2^17)
MAX_L1_ENTRIES = 1 << 17  # non-zero descriptors decoded into L1Entry objects
MAX_WALK_STES = 1 << 21  # 128 MiB of STEs
MAX_WALK_CDS = 1 << 20  # 64 MiB of CDs, over all CD tables
MAX_CD_TABLES = 1 << 14  # distinct CD tables read
MAX_L1CD = 1 << 12  # L1CD descriptors read per CD table (the kernel's maximum is 1024)
READ_CHUNK = 1 << 22  # bytes per read when walking a large linear table


@dataclass
class Geometry:
    """STRTAB_BASE / STRTAB_BASE_CFG decoded, with the hardware's effective values."""

    base_raw: int
    cfg_raw: int
    fmt: int
    format: str  # "2lvl", "linear" or "invalid" (FMT 2/3: the kernel rejects, HW walks it as linear)
    base: int  # as Linux masks it: STRTAB_BASE & GENMASK(51,6)
    base_spec: int  # the architectural ADDR field [55:6]
    ra: int
    log2size: int
    split: int
    eff_log2size: int  # MIN(LOG2SIZE, SIDSIZE) [S-SBC]
    eff_split: int  # 6, 8 or 10; reserved values behave as 6 [S-SBC]
    n_l1: int  # descriptors the HW indexes (2-level)
    n_ste: int  # STEs the HW indexes (linear)

    @property
    def l1_bytes(self) -> int:
        return self.n_l1 * 8


@dataclass(slots=True)
class L1Entry:
    index: int
    raw: int | None  # None: descriptor not in the dump
    span: int = 0
    l2ptr: int = 0  # Linux mask [51:6]
    l2ptr_spec: int = 0  # spec field [55:6]
    status: str = "unused"
    n_stes: int = 0  # STEs the HW would index through it
    l2_state: str = "n/a"  # present / partial / missing / not walked / n/a
    l2_hole: Hole | None = None
    alias_of: int | None = None
    hole: Hole | None = None


@dataclass
class CdTable:
    """A stage-1 context-descriptor table reached from one or more STEs."""

    ptr: int
    s1fmt: int
    s1cdmax: int
    l1: list[tuple[int, int | None, str]] = field(default_factory=list)  # (index, raw, status)
    ssids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))
    addrs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    words: np.ndarray = field(default_factory=lambda: np.zeros((0, 8), dtype=np.uint64))
    holes: list[Hole] = field(default_factory=list)
    truncated: bool = False
    not_read: str = ""  # why the CDs were not read (IPA, geometry the walk does not follow)


@dataclass
class StreamTable:
    geometry: Geometry
    l1_raw: np.ndarray  # uint64 per descriptor read (2-level)
    l1_known: np.ndarray  # bool: the descriptor's memory is in the dump
    l1_holes: list[Hole]
    l1: list[L1Entry]  # non-zero and unknown descriptors, in index order
    sids: np.ndarray  # uint64 StreamID of each walked STE
    words: np.ndarray  # (N, 8) uint64
    known: np.ndarray  # bool: that STE's bytes are in the dump
    addrs: np.ndarray  # uint64 physical address of each walked STE
    ste_holes: list[Hole]
    truncated: list[str]  # what the walk did not cover, and why
    cd_tables: dict[tuple[int, int, int], CdTable] = field(default_factory=dict)

    def populated_l1(self) -> list[L1Entry]:
        return [e for e in self.l1 if e.raw is not None and e.span != 0]

    def find_sid(self, sid: int) -> int | None:
        idx = np.flatnonzero(self.sids == sid)
        return int(idx[0]) if len(idx) else None

    def configs(self) -> np.ndarray:
        return vector.field(L.STE, self.words, "CONFIG")

    def valid(self) -> np.ndarray:
        return vector.field(L.STE, self.words, "V").astype(bool) & self.known


def geometry(regs: Registers) -> Geometry | None:
    """Decode the table registers; None when STRTAB_BASE or STRTAB_BASE_CFG is unknown."""
    base_raw, cfg = regs.get("strtab_base"), regs.get("strtab_base_cfg")
    if base_raw is None or cfg is None:
        return None
    fmt = get(L.STRTAB_BASE_CFG, cfg, "FMT")
    log2size = get(L.STRTAB_BASE_CFG, cfg, "LOG2SIZE")
    split = get(L.STRTAB_BASE_CFG, cfg, "SPLIT")
    sid_bits = regs.sid_bits
    eff_log2 = min(log2size, sid_bits) if sid_bits is not None else log2size
    eff_split = split if split in (6, 8, 10) else 6
    fmt_name = {0: "linear", 1: "2lvl"}.get(fmt, "invalid")
    if fmt == 1:
        n_l1 = 1 << max(eff_log2 - eff_split, 0)
        n_ste = 0
    else:
        n_l1 = 0
        n_ste = 1 << eff_log2
    return Geometry(
        base_raw=base_raw,
        cfg_raw=cfg,
        fmt=fmt,
        format=fmt_name,
        base=base_raw & L.LINUX_STRTAB_BASE_ADDR_MASK,
        base_spec=get(L.STRTAB_BASE, base_raw, "ADDR"),
        ra=get(L.STRTAB_BASE, base_raw, "RA"),
        log2size=log2size,
        split=split,
        eff_log2size=eff_log2,
        eff_split=eff_split,
        n_l1=n_l1,
        n_ste=n_ste,
    )


def _l1_status(span: int, l2ptr: int, split: int) -> tuple[str, int]:
    """Descriptor status as the hardware sees it [S-L1STD] 5.1/5.1.1, and its STE count."""
    if span == 0:
        return "unused", 0
    if span >= 12:
        return "reserved-span", 0  # behaves as 0
    if span - 1 > split:
        return "span-out-of-bounds", 0  # invalid given the split point
    n = 1 << (span - 1)
    if l2ptr == 0:
        return "null-l2ptr", n
    if l2ptr % (n * L.STE_BYTES):
        return "misaligned-l2ptr", n
    return "valid", n


class _Walker:
    """Plans the STE reads (first SID, address, count), then reads them into preallocated arrays."""

    def __init__(self, mem: PhysicalMemory, max_stes: int) -> None:
        self.mem = mem
        self.max_stes = max_stes
        self.tasks: list[tuple[int, int, int, L1Entry | None]] = []
        self.count = 0
        self.holes: list[Hole] = []
        self.truncated: list[str] = []

    def plan(self, first_sid: int, addr: int, n: int, entry: L1Entry | None) -> None:
        if self.count + n > self.max_stes:
            n_ok = max(self.max_stes - self.count, 0)
            if not any(t.startswith("STE walk stopped") for t in self.truncated):
                self.truncated.append(
                    f"STE walk stopped at {self.max_stes} STEs (SID {first_sid + n_ok:#x} onwards not decoded; raise with --max-stes)"
                )
            if entry is not None and n_ok == 0:
                entry.l2_state = "not walked"
            n = n_ok
        if n > 0:
            self.tasks.append((first_sid, addr, n, entry))
            self.count += n

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        total = self.count
        words = np.empty((total, 8), dtype=np.uint64)
        flat = words.reshape(-1).view(np.uint8)
        sids = np.empty(total, dtype=np.uint64)
        addrs = np.empty(total, dtype=np.uint64)
        known = np.ones(total, dtype=bool)
        pos = 0
        for first_sid, addr, n, entry in self.tasks:
            n_known = n
            first: Hole | None = None
            done = 0
            while done < n:
                k = min(n - done, READ_CHUNK // L.STE_BYTES)
                a = addr + done * L.STE_BYTES
                r = self.mem.read_partial(a, k * L.STE_BYTES)
                row = pos + done
                flat[row * L.STE_BYTES : (row + k) * L.STE_BYTES] = np.frombuffer(r.data, dtype=np.uint8)
                for h in r.holes:
                    lo = max(0, (h.start - a) // L.STE_BYTES)
                    hi = min(k, -(-(h.end - a) // L.STE_BYTES))
                    n_known -= int(known[row + lo : row + hi].sum())
                    known[row + lo : row + hi] = False
                    self.holes.append(h)
                    first = first or h
                done += k
            sids[pos : pos + n] = np.arange(first_sid, first_sid + n, dtype=np.uint64)
            addrs[pos : pos + n] = np.uint64(addr) + np.arange(n, dtype=np.uint64) * np.uint64(L.STE_BYTES)
            if entry is not None:
                entry.l2_state = "present" if n_known == n else ("missing" if n_known == 0 else "partial")
                entry.l2_hole = first
            pos += n
        return sids, words, known, addrs


def _ranges(mem: PhysicalMemory) -> list:
    """The dump's ranges, computed once per layer (the walk asks for every L2 table)."""
    cached = getattr(mem, "_walk_ranges", None)
    if cached is None:
        cached = mem.ranges()
        try:
            mem._walk_ranges = cached  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return cached


def walk(mem: PhysicalMemory, regs: Registers, max_stes: int = MAX_WALK_STES, read_cds: bool = True) -> StreamTable | None:
    """Walk the stream table the registers describe; None when the table registers are unknown."""
    g = geometry(regs)
    if g is None:
        return None
    w = _Walker(mem, max_stes)
    l1_raw = np.zeros(0, dtype=np.uint64)
    l1_known = np.zeros(0, dtype=bool)
    l1_holes: list[Hole] = []
    entries: list[L1Entry] = []
    if g.fmt == 1:
        n = g.n_l1
        if n > MAX_L1_WALK:
            w.truncated.append(f"L1 table claims {n} descriptors; read the first {MAX_L1_WALK}")
            n = MAX_L1_WALK
        r = mem.read_partial(g.base, n * 8)
        l1_raw = np.frombuffer(r.data, dtype="<u8").astype(np.uint64)
        l1_known = np.ones(n, dtype=bool)
        for h in r.holes:
            lo = max(0, (h.start - g.base) // 8)
            hi = min(n, -(-(h.end - g.base) // 8))
            l1_known[lo:hi] = False
            l1_holes.append(h)
        # one entry per non-zero descriptor, and one per run of descriptors missing from the dump
        missing_start = ~l1_known & np.concatenate(([True], l1_known[:-1])) if n else l1_known
        interesting = np.flatnonzero((l1_known & (l1_raw != 0)) | missing_start)
        if len(interesting) > MAX_L1_ENTRIES:
            w.truncated.append(f"{len(interesting)} non-zero L1 descriptors; decoded the first {MAX_L1_ENTRIES}")
            interesting = interesting[:MAX_L1_ENTRIES]
        seen: dict[int, int] = {}
        for i in interesting.tolist():
            if not l1_known[i]:
                hole = next((h for h in l1_holes if h.start <= g.base + 8 * i < h.end), None)
                entries.append(L1Entry(i, None, status="missing", hole=hole))
                continue
            raw = int(l1_raw[i])
            span = get(L.L1STD, raw, "SPAN")
            l2 = raw & L.LINUX_L1_DESC_L2PTR_MASK
            status, n_stes = _l1_status(span, l2, g.eff_split)
            e = L1Entry(i, raw, span, l2, get(L.L1STD, raw, "L2PTR"), status, n_stes)
            if status in ("valid", "misaligned-l2ptr", "null-l2ptr"):
                if l2 in seen:
                    e.alias_of = seen[l2]
                else:
                    seen[l2] = i
                end = l2 + n_stes * L.STE_BYTES
                if mem.page_state(l2) is PageState.ABSENT and mem.page_state(end - 1) is PageState.ABSENT \
                        and not any(r.start < end and r.end > l2 for r in _ranges(mem)):
                    # wholly outside the dump: nothing to decode, no rows to hold
                    e.l2_state = "missing"
                    e.l2_hole = Hole(l2, end, PageState.ABSENT, "outside every range of the dump")
                    w.holes.append(e.l2_hole)
                else:
                    w.plan(i << g.eff_split, l2, n_stes, e)
            entries.append(e)
    else:
        w.plan(0, g.base, g.n_ste, None)
    sids, words, known, addrs = w.run()
    t = StreamTable(g, l1_raw, l1_known, l1_holes, entries, sids, words, known, addrs, w.holes, w.truncated)
    if read_cds:
        read_cd_tables(mem, t, regs)
    return t


def read_cd_tables(mem: PhysicalMemory, t: StreamTable, regs: Registers) -> None:
    """Read the CD table behind every valid stage-1 STE (Config 5); nested STEs point at IPAs."""
    if len(t.words) == 0:
        return
    cfg = t.configs()
    valid = t.valid()
    sel = np.flatnonzero(valid & ((cfg == L.STE_CFG_S1) | (cfg == L.STE_CFG_NESTED)))
    if len(sel) == 0:
        return
    w0 = t.words[sel, 0]
    keys = np.stack(
        [
            w0 & np.uint64(L.LINUX_STE_S1CTXPTR_MASK),
            vector.field(L.STE, t.words[sel], "S1FMT"),
            vector.field(L.STE, t.words[sel], "S1CDMAX"),
            cfg[sel],
        ],
        axis=1,
    )
    budget = [MAX_WALK_CDS]
    uniq = np.unique(keys, axis=0).tolist()
    if len(uniq) > MAX_CD_TABLES:
        t.truncated.append(f"{len(uniq)} distinct CD tables; read the first {MAX_CD_TABLES}")
    for n_read, (ptr, fmt, cdmax, c) in enumerate(uniq):
        key = (int(ptr), int(fmt), int(cdmax))
        if n_read >= MAX_CD_TABLES:
            t.cd_tables[key] = CdTable(*key, not_read=f"more than {MAX_CD_TABLES} CD tables: not read")
            continue
        if key in t.cd_tables:
            continue
        if c == L.STE_CFG_NESTED:
            t.cd_tables[key] = CdTable(*key, not_read="nested STE: S1ContextPtr is an IPA (stage-2 input)")
            continue
        t.cd_tables[key] = _read_cd_table(mem, key, budget)


def _read_cd_table(mem: PhysicalMemory, key: tuple[int, int, int], budget: list[int]) -> CdTable:
    ptr, fmt, cdmax = key
    ct = CdTable(ptr, fmt, cdmax)
    if ptr == 0:
        ct.not_read = "S1ContextPtr is 0"
        return ct
    n_ctx = 1 << cdmax
    chunks: list[tuple[int, int, int]] = []  # (first ssid, addr, count)
    if fmt in (0, 3):  # linear (3 is reserved and behaves as 0 [S-STE])
        chunks.append((0, ptr, n_ctx))
    elif fmt in (1, 2):
        leaf = 64 if fmt == 1 else L.CTXDESC_L2_ENTRIES  # 4 KiB or 64 KiB leaves [S-STE] S1Fmt
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
            ct.l1.append((i, None, "missing"))
        for i in np.flatnonzero(known & (raws != 0)).tolist():
            raw = int(raws[i])
            if not raw & 1:
                ct.l1.append((i, raw, "invalid"))
                continue
            l2 = raw & L.LINUX_L1CD_L2PTR_MASK
            status = "null-l2ptr" if l2 == 0 else ("misaligned-l2ptr" if l2 % (leaf * L.CD_BYTES) else "valid")
            ct.l1.append((i, raw, status))
            if l2:
                chunks.append((i * leaf, l2, min(leaf, n_ctx)))
        ct.l1.sort(key=lambda x: x[0])
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

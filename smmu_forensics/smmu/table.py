"""Walk a stream table through :class:`PhysicalMemory` -> :class:`StreamTable`.

The walk reads what the kernel would read (addresses masked as Linux masks them, GENMASK(51,6))
over the geometry the hardware would use (``LOG2SIZE`` capped at ``IDR1.SIDSIZE``), bounded
whatever the registers claim: at most :data:`MAX_L1_WALK` L1 descriptors, :data:`MAX_WALK_STES`
STEs and :data:`MAX_WALK_CDS` CDs.  Memory the dump lacks is recorded as holes, never as zeros.

Example (the carved QEMU capture shipped in ``fixtures/``)::

    >>> from smmu_forensics.dumps.sniff import open_dump
    >>> from smmu_forensics.smmu.registers import Registers
    >>> regs = Registers.from_mapping({"strtab_base": 0x40000000431BE000, "strtab_base_cfg": 0x10210,
    ...                                "idr0": 0x0D40101A, "idr1": 0x02730010})
    >>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
    ...     t = walk(mem, regs)
    >>> t.geometry.format.value, hex(t.geometry.base), [e.index for e in t.l1]
    ('2lvl', '0x431be000', [0, 1])
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from smmu_forensics.dumps.base import Hole, MemRange, PageState, PhysicalMemory
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector
from smmu_forensics.smmu.cdtable import CdTable, read_cd_tables
from smmu_forensics.smmu.fields import StrtabFmt, get
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.states import L1Status, L2State, TableFormat

__all__ = ["Geometry", "L1Entry", "StreamTable", "geometry", "walk", "walk_limit", "MAX_WALK_STES"]

MAX_L1_WALK = 1 << 20  # 8 MiB of L1 descriptors (the kernel's own maximum is 2^17)
MAX_L1_ENTRIES = 1 << 17  # non-zero descriptors decoded into L1Entry objects
MAX_WALK_STES = 1 << 21  # 128 MiB of STEs
#: Unless --max-stes says otherwise, a walk holds at most twice as many STE rows as the dump's
#: memory could hold STEs (and at least this many): rows for STEs a dump does not hold cost the
#: same 81 bytes as the others, and a 3 MB LiME file of 65,535 one-byte ranges under 2^17 L2
#: pointers would otherwise hold 2M of them (442 MB).  Real dumps' ranges are megabytes long, so
#: only the L2 tables straddling a range's edge add rows beyond what is held.
MIN_WALK_STES = 1 << 16
READ_CHUNK = 1 << 22  # bytes per read when walking a large linear table
@dataclass
class Geometry:
    """STRTAB_BASE / STRTAB_BASE_CFG decoded, with the hardware's effective values."""

    base_raw: int
    cfg_raw: int
    fmt: int
    format: TableFormat  # FMT 2/3 are "invalid": the kernel rejects them, the HW walks them as linear
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
    status: L1Status = L1Status.UNUSED
    n_stes: int = 0  # STEs the HW would index through it
    l2_state: L2State = L2State.NA
    l2_hole: Hole | None = None
    alias_of: int | None = None
    hole: Hole | None = None


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

    def find_sid(self, sid: int) -> int | None:
        idx = np.flatnonzero(self.sids == sid)
        return int(idx[0]) if len(idx) else None

    def configs(self) -> np.ndarray:
        """STE.Config of every walked STE (decoded once; treat as read-only)."""
        return self._configs

    def valid(self) -> np.ndarray:
        """STE.V of every walked STE that is in the dump (decoded once; treat as read-only)."""
        return self._valid

    @cached_property
    def _configs(self) -> np.ndarray:
        return vector.field(L.STE, self.words, "CONFIG")

    @cached_property
    def _valid(self) -> np.ndarray:
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
    eff_split = split if split in L.STRTAB_LEGAL_SPLITS else L.STRTAB_LEGAL_SPLITS[0]
    fmt_name = {int(StrtabFmt.LINEAR): TableFormat.LINEAR, int(StrtabFmt.TWO_LEVEL): TableFormat.TWO_LEVEL}.get(fmt, TableFormat.INVALID)
    if fmt == StrtabFmt.TWO_LEVEL:
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
        base=L.linux_get(L.STRTAB_BASE, base_raw, "ADDR"),
        base_spec=get(L.STRTAB_BASE, base_raw, "ADDR"),
        ra=get(L.STRTAB_BASE, base_raw, "RA"),
        log2size=log2size,
        split=split,
        eff_log2size=eff_log2,
        eff_split=eff_split,
        n_l1=n_l1,
        n_ste=n_ste,
    )


def _l1_status(span: int, l2ptr: int, split: int) -> tuple[L1Status, int]:
    """Descriptor status as the hardware sees it [S-L1STD] 5.1/5.1.1, and its STE count."""
    if span == 0:
        return L1Status.UNUSED, 0
    if span > L.STRTAB_MAX_SPAN:
        return L1Status.RESERVED_SPAN, 0  # behaves as 0
    if span - 1 > split:
        return L1Status.SPAN_OUT_OF_BOUNDS, 0  # invalid given the split point
    n = 1 << (span - 1)
    if l2ptr == 0:
        return L1Status.NULL_L2PTR, n
    if l2ptr % (n * L.STE_BYTES):
        return L1Status.MISALIGNED_L2PTR, n
    return L1Status.VALID, n


class _Walker:
    """Plans the STE reads (first SID, address, count), then reads them into preallocated arrays."""

    def __init__(self, mem: PhysicalMemory, max_stes: int, why: str = "") -> None:
        self.mem = mem
        self.max_stes = max_stes
        self.why = why
        self.tasks: list[tuple[int, int, int, L1Entry | None]] = []
        self.count = 0
        self.holes: list[Hole] = []
        self.truncated: list[str] = []

    def plan(self, first_sid: int, addr: int, n: int, entry: L1Entry | None) -> None:
        if self.count + n > self.max_stes:
            n_ok = max(self.max_stes - self.count, 0)
            if not any(t.startswith("STE walk stopped") for t in self.truncated):
                self.truncated.append(
                    f"STE walk stopped at {self.max_stes} STEs{f' ({self.why})' if self.why else ''}"
                    f" (SID {first_sid + n_ok:#x} onwards not decoded; raise with --max-stes)"
                )
            if entry is not None and n_ok == 0:
                entry.l2_state = L2State.NOT_WALKED
            n = n_ok
        if n > 0:
            self.tasks.append((first_sid, addr, n, entry))
            self.count += n

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Read every planned STE; tasks that sit back to back in memory share one read."""
        total = self.count
        words = np.empty((total, 8), dtype=np.uint64)
        flat = words.reshape(-1).view(np.uint8)
        known = np.ones(total, dtype=bool)
        n = np.array([t[2] for t in self.tasks], dtype=np.int64)
        start = np.cumsum(n) - n  # first row of each task
        first_sid = np.array([t[0] for t in self.tasks], dtype=np.uint64)
        first_addr = np.array([t[1] for t in self.tasks], dtype=np.uint64)
        row = np.arange(total, dtype=np.uint64)
        ustart = start.astype(np.uint64)
        # row k of task i: SID first_sid[i] + (k - start[i]), address first_addr[i] + 64 (k - start[i]);
        # built in place (uint64 wraps and unwraps exactly): two arrays of 8 bytes a row, no temporaries
        sids = np.repeat(first_sid - ustart, n)
        sids += row
        addrs = np.repeat(first_addr - ustart * np.uint64(L.STE_BYTES), n)
        row *= np.uint64(L.STE_BYTES)
        addrs += row
        del row
        for group in self._groups():
            self._read_group(group, start, flat, known)
        return sids, words, known, addrs

    def _groups(self) -> list[list[int]]:
        """Runs of task indices whose STEs are contiguous in memory, at most READ_CHUNK bytes a run."""
        groups: list[list[int]] = []
        end = size = -1
        for i, (_, addr, n, _) in enumerate(self.tasks):
            nbytes = n * L.STE_BYTES
            if groups and addr == end and size + nbytes <= READ_CHUNK:
                groups[-1].append(i)
                size += nbytes
            else:
                groups.append([i])
                size = nbytes
            end = addr + nbytes
        return groups

    def _read_group(self, group: list[int], start: np.ndarray, flat: np.ndarray, known: np.ndarray) -> None:
        row0 = int(start[group[0]])
        addr0 = self.tasks[group[0]][1]
        n_all = sum(self.tasks[i][2] for i in group)
        holes: list[Hole] = []
        done = 0
        while done < n_all:  # a single task may exceed READ_CHUNK: read it in pieces
            k = min(n_all - done, READ_CHUNK // L.STE_BYTES)
            r = self.mem.read_partial(addr0 + done * L.STE_BYTES, k * L.STE_BYTES)
            flat[(row0 + done) * L.STE_BYTES : (row0 + done + k) * L.STE_BYTES] = np.frombuffer(r.data, dtype=np.uint8)
            holes += r.holes
            done += k
        for i in group:
            _, addr, n, entry = self.tasks[i]
            row, end = int(start[i]), addr + n * L.STE_BYTES
            n_known, first = n, None
            for h in holes:  # clipped to this task, as if it had been read alone
                if h.start >= end or h.end <= addr:
                    continue
                h = Hole(max(h.start, addr), min(h.end, end), h.state, h.reason)
                lo = (h.start - addr) // L.STE_BYTES
                hi = -(-(h.end - addr) // L.STE_BYTES)
                n_known -= int(known[row + lo : row + hi].sum())
                known[row + lo : row + hi] = False
                self.holes.append(h)
                first = first or h
            if entry is not None:
                entry.l2_state = L2State.PRESENT if n_known == n else (L2State.MISSING if n_known == 0 else L2State.PARTIAL)
                entry.l2_hole = first


def walk_limit(mem: PhysicalMemory) -> tuple[int, str]:
    """The default STE row cap for this dump and why (see MIN_WALK_STES)."""
    held = sum(r.size for r in mem.ranges() if r.state.readable)  # excluded/lost pages hold no STE either
    cap = min(MAX_WALK_STES, max(MIN_WALK_STES, 2 * (held // L.STE_BYTES)))
    if cap < MAX_WALK_STES:
        return cap, f"twice the {held // L.STE_BYTES} STEs that fit in the {held} bytes the dump holds"
    return cap, ""


def walk(mem: PhysicalMemory, regs: Registers, max_stes: int | None = None, read_cds: bool = True) -> StreamTable | None:
    """Walk the stream table the registers describe; None when the table registers are unknown.
    ``max_stes`` caps the STEs walked (default :func:`walk_limit`)."""
    g = geometry(regs)
    if g is None:
        return None
    why = ""
    if max_stes is None:
        max_stes, why = walk_limit(mem)
    w = _Walker(mem, max_stes, why)
    l1_raw = np.zeros(0, dtype=np.uint64)
    l1_known = np.zeros(0, dtype=bool)
    l1_holes: list[Hole] = []
    entries: list[L1Entry] = []
    if g.fmt == StrtabFmt.TWO_LEVEL:
        l1_raw, l1_known, l1_holes = _read_l1(mem, g, w.truncated)
        entries = _l1_entries(mem, g, l1_raw, l1_known, l1_holes, w)
    else:
        w.plan(0, g.base, g.n_ste, None)
    sids, words, known, addrs = w.run()
    t = StreamTable(g, l1_raw, l1_known, l1_holes, entries, sids, words, known, addrs, w.holes, w.truncated)
    if read_cds and len(t.words):
        t.cd_tables = read_cd_tables(mem, t.words, t.valid(), t.configs(), t.truncated)
    return t


def _read_l1(mem: PhysicalMemory, g: Geometry, truncated: list[str]) -> tuple[np.ndarray, np.ndarray, list[Hole]]:
    """The L1 descriptors (bounded by MAX_L1_WALK), which of them the dump holds, and its holes."""
    n = g.n_l1
    if n > MAX_L1_WALK:
        truncated.append(f"L1 table claims {n} descriptors; read the first {MAX_L1_WALK}")
        n = MAX_L1_WALK
    r = mem.read_partial(g.base, n * 8)
    l1_raw = np.frombuffer(r.data, dtype="<u8").astype(np.uint64)
    l1_known = np.ones(n, dtype=bool)
    for h in r.holes:
        lo = max(0, (h.start - g.base) // 8)
        hi = min(n, -(-(h.end - g.base) // 8))
        l1_known[lo:hi] = False
    return l1_raw, l1_known, list(r.holes)


class _Coverage:
    """Does any range of the dump overlap [a, b)?  O(log n) a query (a dump may have 65,535 ranges)."""

    def __init__(self, ranges: list[MemRange]) -> None:
        rs = sorted(ranges, key=lambda r: r.start)
        self.starts = [r.start for r in rs]
        self.max_end = list(itertools.accumulate((r.end for r in rs), max))

    def overlaps(self, a: int, b: int) -> bool:
        i = bisect.bisect_left(self.starts, b) - 1  # ranges [0..i] start before b
        return i >= 0 and self.max_end[i] > a


def _l1_entries(mem: PhysicalMemory, g: Geometry, l1_raw: np.ndarray, l1_known: np.ndarray, l1_holes: list[Hole],
                w: _Walker) -> list[L1Entry]:
    """One entry per non-zero descriptor and per run of descriptors missing from the dump; plans the L2 reads."""
    n = len(l1_raw)
    missing_start = ~l1_known & np.concatenate(([True], l1_known[:-1])) if n else l1_known
    interesting = np.flatnonzero((l1_known & (l1_raw != 0)) | missing_start)
    if len(interesting) > MAX_L1_ENTRIES:
        w.truncated.append(f"{len(interesting)} non-zero L1 descriptors; decoded the first {MAX_L1_ENTRIES}")
        interesting = interesting[:MAX_L1_ENTRIES]
    entries: list[L1Entry] = []
    seen: dict[int, int] = {}
    covered: _Coverage | None = None  # the dump's ranges, asked for once, when first needed
    span_f, ptr_f = L.L1STD.field("SPAN"), L.L1STD.field("L2PTR")
    for i in interesting.tolist():
        if not l1_known[i]:
            hole = next((h for h in l1_holes if h.start <= g.base + 8 * i < h.end), None)
            entries.append(L1Entry(i, None, status=L1Status.MISSING, hole=hole))
            continue
        raw = int(l1_raw[i])
        span = (raw & span_f.mask) >> span_f.lo
        l2 = raw & ptr_f.linux_mask
        status, n_stes = _l1_status(span, l2, g.eff_split)
        e = L1Entry(i, raw, span, l2, raw & ptr_f.mask, status, n_stes)
        entries.append(e)
        if not status.points:
            continue
        if l2 in seen:
            e.alias_of = seen[l2]
        else:
            seen[l2] = i
        end = l2 + n_stes * L.STE_BYTES
        if mem.page_state(l2) is PageState.ABSENT and mem.page_state(end - 1) is PageState.ABSENT:
            if covered is None:
                covered = _Coverage(mem.ranges())
            if not covered.overlaps(l2, end):
                # wholly outside the dump: nothing to decode, no rows to hold
                e.l2_state = L2State.MISSING
                e.l2_hole = Hole(l2, end, PageState.ABSENT, "outside every range of the dump")
                w.holes.append(e.l2_hole)
                continue
        w.plan(i << g.eff_split, l2, n_stes, e)
    return entries



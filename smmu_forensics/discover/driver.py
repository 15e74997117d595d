"""The arm-smmu-v3 driver's own copy of its stream-table registers, found in kernel memory.

Linux up to 6.11 keeps, in ``struct arm_smmu_device`` (drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h)::

    unsigned long ias, oas, pgsize_bitmap;
    unsigned int asid_bits, vmid_bits;
    DECLARE_BITMAP(vmid_map, ARM_SMMU_MAX_VMIDS);     /* 1 << 16 bits */
    unsigned int ssid_bits, sid_bits;
    struct arm_smmu_strtab_cfg {
        __le64 *strtab;                   /* +0  VA of the L1 (or linear) table */
        dma_addr_t strtab_dma;            /* +8  its PA */
        struct arm_smmu_strtab_l1_desc *l1_desc;
        unsigned int num_l1_ents;         /* +24 */
        u64 strtab_base;                  /* +32 = (strtab_dma & ADDR_MASK) | STRTAB_BASE_RA */
        u32 strtab_base_cfg;              /* +40 the register value, written verbatim */
    } strtab_cfg;

so ``strtab_base == strtab_dma | RA`` three words apart is a signature; the fields before it give
the widths the rules need, and ``ias``/``oas`` are checked against the kernel log.  One pass over
the dump's readable memory, vectorised, in chunks (bounded memory whatever the dump's size).
Linux 6.12+ no longer stores the register values (``arm_smmu_write_strtab()`` recomputes them):
its 2-level ``strtab_cfg.l2`` is ``{ l1tab (VA), l2ptrs (VA), l1_dma, num_l1_ents }``, so a
linear-map VA two words before the physical address it maps, followed by a power-of-two count,
is that signature (it needs VMCOREINFO's PHYS_OFFSET and VA_BITS); the registers are rebuilt as
that function builds them (STRTAB_BASE = l1_dma | RA; STRTAB_BASE_CFG = 2-level, SPLIT 8,
LOG2SIZE ilog2(num_l1_ents) + 8).  ``sid_bits``/``ssid_bits`` sit just before it as in 6.1; the
ASID/VMID widths moved (``vmid_map`` became an IDA) and stay unknown.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from smmu_forensics.discover.kva import KernelVA, TranslationError
from smmu_forensics.discover.shape import ShapeScan, TableCandidate
from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu.recorded import DriverCopy

__all__ = ["DriverCopy", "ScanHits", "find_driver_copies", "scan", "decode_61", "decode_612", "CHUNK"]

CHUNK = 8 << 20  # bytes scanned per read
RA = 1 << 62  # STRTAB_BASE_RA
VMID_MAP_BYTES = (1 << 16) // 8  # ARM_SMMU_MAX_VMIDS bits
MAX_CANDIDATES = 64
STRTAB_SPLIT = 8  # arm-smmu-v3.h STRTAB_SPLIT
LINEAR_MAX_LOG2SIZE = 24  # a linear table of 2^24 STEs is 1 GiB: beyond any the kernel allocates


FDT_MAGIC_LE = 0xEDFE0DD0  # the bytes d0 0d fe ed (FDT magic, big-endian) read as a little-endian u32


@dataclass
class ScanHits:
    """What one pass over memory found: driver register copies (decoded) and FDT blob candidates."""

    copies: list[DriverCopy]
    fdts: list[int]
    tables: list[TableCandidate] = field(default_factory=list)  # found by shape (:mod:`.shape`), best first
    notes: list[str] = field(default_factory=list)


def find_driver_copies(mem: PhysicalMemory) -> list[DriverCopy]:
    """Every place in readable memory that holds a 6.1-layout ``arm_smmu_strtab_cfg``."""
    return scan(mem).copies


def scan(mem: PhysicalMemory) -> ScanHits:
    """One pass over the dump's readable memory for every signature discovery uses."""
    hits: list[int] = []
    hits612: list[int] = []
    hits612lin: list[int] = []
    fdts: list[int] = []
    shapes = ShapeScan()
    try:
        kva: KernelVA | None = KernelVA.from_vmcoreinfo(mem.vmcoreinfo())
    except TranslationError:
        kva = None
    delta = np.uint64((kva.page_offset - kva.phys_offset) % (1 << 64)) if kva else None
    for a, buf, owned in mem.scan_chunks(CHUNK, 64):
        skip = -a % 8  # scan whole words
        usable = (len(buf) - skip) // 8 * 8
        if usable < 48:
            continue
        w = np.frombuffer(buf, dtype="<u8", count=usable // 8, offset=skip)
        shapes.feed(a + skip, w, (owned - skip + 7) // 8)
        if len(fdts) < MAX_CANDIDATES:
            fdts += [a + skip + 8 * i for i in np.flatnonzero((w & np.uint64(0xFFFFFFFF)) == np.uint64(FDT_MAGIC_LE)).tolist()
                     if skip + 8 * i < owned][:MAX_CANDIDATES]
        if delta is not None and len(hits612) + len(hits612lin) < 2 * MAX_CANDIDATES:
            va, l1dma, n = w[:-5], w[2:-3], w[3:-2] & np.uint64(0xFFFFFFFF)
            ok612 = (va == l1dma + delta) & (l1dma != 0)
            if ok612.any():
                ok612 &= ((l1dma & np.uint64(0xFFF)) == 0) & (n != 0) & ((n & (n - np.uint64(1))) == 0) & (n <= np.uint64(1 << 17))
                hits612 += [a + skip + 8 * int(i) for i in np.flatnonzero(ok612)[:MAX_CANDIDATES] if skip + 8 * int(i) < owned]
            ste_dma, n_lin = w[1:-4], w[2:-3] & np.uint64(0xFFFFFFFF)  # linear = { table, ste_dma, num_ents }
            ok_lin = (va == ste_dma + delta) & (ste_dma != 0)
            if ok_lin.any():
                ok_lin &= ((ste_dma & np.uint64(0x3F)) == 0) & (n_lin != 0) & ((n_lin & (n_lin - np.uint64(1))) == 0) \
                    & (n_lin <= np.uint64(1 << LINEAR_MAX_LOG2SIZE))
                hits612lin += [a + skip + 8 * int(i) for i in np.flatnonzero(ok_lin)[:MAX_CANDIDATES] if skip + 8 * int(i) < owned]
        dma, base = w[:-5], w[3:-2]
        ok = (base == (dma | np.uint64(RA))) & (dma != 0)
        if ok.any():
            ok &= ((dma & np.uint64(0x3F)) == 0) & (dma < np.uint64(1 << 52))
            hits += [a + skip + 8 * i - 8 for i in np.flatnonzero(ok).tolist() if skip + 8 * i < owned]
    copies = [c for c in (decode_61(mem, h) for h in hits[:MAX_CANDIDATES]) if c is not None]
    copies += [c for c in (decode_612(mem, h) for h in hits612[:MAX_CANDIDATES]) if c is not None]
    copies += [c for c in (decode_612(mem, h, linear=True) for h in hits612lin[:MAX_CANDIDATES]) if c is not None]
    return ScanHits(copies, fdts[:MAX_CANDIDATES], shapes.finish(mem), shapes.truncated)


def decode_612(mem: PhysicalMemory, addr: int, linear: bool = False) -> DriverCopy | None:
    """6.12's ``strtab_cfg``: registers rebuilt as ``arm_smmu_write_strtab()`` builds them, from the
    union's ``l2`` member (a 2-level table) or, with ``linear``, its ``linear`` member; the table
    it points at corroborates it."""
    r = mem.read_partial(addr - 8, 40)
    if r.holes or addr < 8:
        return None
    ssid_bits, sid_bits = struct.unpack_from("<II", r.data, 0)
    if linear:
        return _decode_612_linear(mem, addr, r.data, ssid_bits, sid_bits)
    va, _l2ptrs, l1_dma, n_l1 = struct.unpack_from("<QQQI", r.data, 8)
    if not l1_dma or l1_dma & 0xFFF or not n_l1 or n_l1 & (n_l1 - 1) or n_l1 > 1 << 17:
        return None
    if not (sid_bits <= 32 and ssid_bits <= 20 and n_l1.bit_length() - 1 + STRTAB_SPLIT <= sid_bits):
        return None
    # corroborate: the L1 table it points at holds at least one descriptor as Linux writes them (Span 9)
    l1 = mem.read_partial(l1_dma, n_l1 * 8)
    desc = np.frombuffer(l1.data, dtype="<u8")
    if l1.holes or not ((desc & np.uint64(0x1F)) == np.uint64(STRTAB_SPLIT + 1)).any():
        return None
    return DriverCopy(addr, va, l1_dma, n_l1, None, None, sid_bits, ssid_bits, layout="6.12")


def _decode_612_linear(mem: PhysicalMemory, addr: int, data: bytes, ssid_bits: int, sid_bits: int) -> DriverCopy | None:
    """``linear = { table, ste_dma, num_ents }`` with num_ents = 1 << sid_bits (6.12's
    ``arm_smmu_init_strtab_linear()``), corroborated by the table: most of its first STEs valid, as
    ``arm_smmu_init_initial_stes()`` leaves every one of them."""
    va, ste_dma, n = struct.unpack_from("<QQI", data, 8)
    if sid_bits > LINEAR_MAX_LOG2SIZE or ssid_bits > 20:  # first: 1 << a garbage u32 is a 512 MB integer
        return None
    if not ste_dma or ste_dma & 0x3F or not n or n != 1 << sid_bits:
        return None
    k = min(n, 64)
    t = mem.read_partial(ste_dma, 64 * k)
    if t.holes:
        return None
    words = np.frombuffer(t.data, dtype="<u8").reshape(k, 8)
    if int(np.count_nonzero(words[:, 0] & np.uint64(1))) * 2 < k:
        return None
    return DriverCopy(addr, va, ste_dma, n, None, None, sid_bits, ssid_bits, layout="6.12-linear")


def decode_61(mem: PhysicalMemory, addr: int) -> DriverCopy | None:
    r = mem.read_partial(addr - 8, 56)
    if r.holes or addr < 8:
        return None
    ssid_bits, sid_bits = struct.unpack_from("<II", r.data, 0)
    va, dma, _l1desc, n_l1, _pad, base, cfg = struct.unpack_from("<QQQIIQI", r.data, 8)
    if base != dma | RA or not dma or dma & 0x3F:
        return None
    if not (sid_bits <= 32 and ssid_bits <= 20 and n_l1 and n_l1 & (n_l1 - 1) == 0):
        return None
    for layout, widths in (("6.1", _widths_61(mem, addr)), ("pre-5.10", _widths_pre510(mem, addr))):
        if widths is not None:
            return DriverCopy(addr, va, dma, n_l1, base, cfg, sid_bits, ssid_bits, *widths, layout=layout)
    return DriverCopy(addr, va, dma, n_l1, base, cfg, sid_bits, ssid_bits)


def _plausible(ias: int, oas: int, asid_bits: int, vmid_bits: int) -> tuple[int, int, int, int] | None:
    ok = asid_bits in (8, 16) and vmid_bits in (8, 16) and 32 <= ias <= 52 and 32 <= oas <= 52
    return (asid_bits, vmid_bits, ias, oas) if ok else None


def _widths_61(mem: PhysicalMemory, addr: int) -> tuple[int, int, int, int] | None:
    """5.10-6.11: ``ias, oas, pgsize_bitmap; unsigned int asid_bits, vmid_bits; vmid_map[]``."""
    r = mem.read_partial(addr - 8 - VMID_MAP_BYTES - 32, 32)
    if r.holes:
        return None
    ias, oas, _pgsize, asid_bits, vmid_bits = struct.unpack_from("<QQQII", r.data, 0)
    return _plausible(ias, oas, asid_bits, vmid_bits)


def _widths_pre510(mem: PhysicalMemory, addr: int) -> tuple[int, int, int, int] | None:
    """Before the ASIDs moved to an xarray (5.10, "iommu/arm-smmu-v3: Share process page tables"):
    ``ias, oas, pgsize_bitmap; unsigned int asid_bits; asid_map[1 << 16 bits]; unsigned int
    vmid_bits; vmid_map[1 << 16 bits]`` (each bitmap 8-aligned after its 4-byte width)."""
    vmid = mem.read_partial(addr - 8 - VMID_MAP_BYTES - 8, 4)
    head = mem.read_partial(addr - 8 - 2 * (VMID_MAP_BYTES + 8) - 24, 32)
    if vmid.holes or head.holes:
        return None
    ias, oas, _pgsize, asid_bits = struct.unpack_from("<QQQI", head.data, 0)
    return _plausible(ias, oas, asid_bits, int.from_bytes(vmid.data, "little"))

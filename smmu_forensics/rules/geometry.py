"""Format dispatch and table geometry (adopt-rules.md 2.2, 2.3, 2.5).

``arm_smmu_kdump_adopt_strtab()`` reads STRTAB_BASE (masked GENMASK(51,6), RA ignored) and
STRTAB_BASE_CFG, dispatches on FMT, then checks the 2-level or linear geometry in this order.
"""

from __future__ import annotations

from smmu_forensics.rules.base import Ctx, Stop, pa
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.fields import StrtabFmt

__all__ = ["fmt", "two_level", "linear"]

U32_MAX_SHIFT = 31  # the kernel computes 1U << log2size: a u32 shift is defined up to 31 (C11 6.5.7)
L1_MAX_SHIFT = L.STRTAB_MAX_L1_ENTRIES.bit_length() - 1  # ilog2(STRTAB_MAX_L1_ENTRIES) = 17


def fmt(ctx: Ctx) -> Stop | None:
    """FMT-INVALID, FMT-2LVL-NOHW: dispatch on STRTAB_BASE_CFG.FMT."""
    g = ctx.geometry
    if g is None:
        return ctx.unknown("FMT-INVALID", "STRTAB_BASE and STRTAB_BASE_CFG (where is the table?)")
    if g.fmt not in (StrtabFmt.LINEAR, StrtabFmt.TWO_LEVEL):
        return ctx.fail("FMT-INVALID", g.fmt, detail=f"STRTAB_BASE_CFG.FMT={g.fmt}")
    ctx.passed("FMT-INVALID", f"FMT={g.fmt} ({g.format.value})")
    if g.fmt == StrtabFmt.TWO_LEVEL:
        f2 = ctx.regs.feat_2lvl
        if f2 is None:
            return ctx.unknown("FMT-2LVL-NOHW", "IDR0.ST_LEVEL and IDR1.SIDSIZE (does the HW support 2-level tables?)")
        if not f2:
            return ctx.fail("FMT-2LVL-NOHW", detail="2-level table but ARM_SMMU_FEAT_2_LVL_STRTAB is clear (IDR0.ST_LEVEL!=1 or SIDSIZE<=8)")
        ctx.passed("FMT-2LVL-NOHW")
    return None


def two_level(ctx: Ctx) -> Stop | None:
    """2LVL-LOG2SIZE-RANGE, 2LVL-SPLIT, 2LVL-L1-MAX, 2LVL-L1-ALIGN; sets ``ctx.num_l1``."""
    g = ctx.geometry
    assert g is not None
    if g.fmt != StrtabFmt.TWO_LEVEL:
        return None
    sid_bits = ctx.regs.sid_bits
    if sid_bits is None:
        return ctx.unknown("2LVL-LOG2SIZE-RANGE", "IDR1.SIDSIZE")
    log2size, split = g.log2size, g.split
    if log2size < split or log2size > sid_bits:
        return ctx.fail("2LVL-LOG2SIZE-RANGE", log2size, split, sid_bits,
                        detail=f"LOG2SIZE={log2size} SPLIT={split} SIDSIZE={sid_bits}")
    ctx.passed("2LVL-LOG2SIZE-RANGE")
    if split != L.STRTAB_SPLIT:
        return ctx.fail("2LVL-SPLIT", split, L.STRTAB_SPLIT, detail=f"SPLIT={split}")
    ctx.passed("2LVL-SPLIT")
    shift = log2size - split
    if ctx.rs.l1_count_before_shift:
        if shift > L1_MAX_SHIFT:
            return ctx.fail("2LVL-L1-MAX", shift, L.STRTAB_MAX_L1_ENTRIES, detail=f"2^{shift} L1 entries")
        num = 1 << shift
    else:
        if shift >= 32:
            # 1U << n with n >= 32 is undefined in C; AArch64 LSLV uses the count mod 32.
            num = (1 << (shift % 32)) & 0xFFFFFFFF
            ctx.v.notes.append(
                f"undefined behaviour in this kernel: 1U << {shift}; modelled as arm64's LSLV (count mod 32) = {num}"
            )
        else:
            num = 1 << shift
        if num > L.STRTAB_MAX_L1_ENTRIES:
            return ctx.fail("2LVL-L1-MAX", num, L.STRTAB_MAX_L1_ENTRIES, detail=f"{num} L1 entries")
    ctx.passed("2LVL-L1-MAX", f"{num} L1 entries")
    ctx.num_l1 = num
    if ctx.rs.l1_base_aligned:
        size = num * 8
        if g.base % size:
            return ctx.fail("2LVL-L1-ALIGN", pa(g.base), detail=f"base {g.base:#x} not aligned to the L1 size {size:#x}")
        ctx.passed("2LVL-L1-ALIGN")
    return None


def linear(ctx: Ctx) -> Stop | None:
    """LIN-LOG2SIZE-MAX, LIN-ALIGN; sets ``ctx.num_ste``."""
    g = ctx.geometry
    assert g is not None
    if g.fmt != StrtabFmt.LINEAR:
        return None
    sid_bits, f2 = ctx.regs.sid_bits, ctx.regs.feat_2lvl
    if sid_bits is None or f2 is None:
        return ctx.unknown("LIN-LOG2SIZE-MAX", "IDR0.ST_LEVEL and IDR1.SIDSIZE")
    if ctx.rs.linear_cap_within_sidsize:
        cap = min(sid_bits, L.LINEAR_MAX_LOG2SIZE) if f2 else sid_bits
    else:
        cap = L.LINEAR_MAX_LOG2SIZE if f2 else sid_bits
    cap = min(cap, U32_MAX_SHIFT)
    if g.log2size > cap:
        return ctx.fail("LIN-LOG2SIZE-MAX", g.log2size, cap, detail=f"LOG2SIZE={g.log2size}, cap {cap}")
    ctx.passed("LIN-LOG2SIZE-MAX", f"cap {cap}")
    ctx.num_ste = 1 << g.log2size
    if ctx.rs.linear_base_aligned:
        # (1U << log2size) * sizeof(struct arm_smmu_ste): the u32 is promoted to size_t, no wrap
        # (arm_smmu_kexec_parse_strtab_linear() in the author's branch; log2size <= 25 here anyway)
        size = (1 << g.log2size) * L.STE_BYTES
        if g.base % size:
            return ctx.fail("LIN-ALIGN", pa(g.base), detail=f"base {g.base:#x} not aligned to the table size {size:#x}")
        ctx.passed("LIN-ALIGN")
    return None


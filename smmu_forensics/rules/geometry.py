"""Format dispatch and table geometry (adopt-rules.md 2.2, 2.3, 2.5).

``arm_smmu_kdump_adopt_strtab()`` reads STRTAB_BASE (masked GENMASK(51,6), RA ignored) and
STRTAB_BASE_CFG, dispatches on FMT, then checks the 2-level or linear geometry in this order.
"""

from __future__ import annotations

from smmu_forensics.rules.engine import Ctx, Stop, pa
from smmu_forensics.smmu import fields as L


def fmt(ctx: Ctx) -> Stop | None:
    g = ctx.geometry
    if g is None:
        return ctx.unknown("FMT-INVALID", "STRTAB_BASE and STRTAB_BASE_CFG (where is the table?)")
    if g.fmt not in (0, 1):
        return ctx.fail("FMT-INVALID", "EINVAL", g.fmt, detail=f"STRTAB_BASE_CFG.FMT={g.fmt}")
    ctx.passed("FMT-INVALID", f"FMT={g.fmt} ({g.format})")
    if g.fmt == 1:
        f2 = ctx.regs.feat_2lvl
        if f2 is None:
            return ctx.unknown("FMT-2LVL-NOHW", "IDR0.ST_LEVEL and IDR1.SIDSIZE (does the HW support 2-level tables?)")
        if not f2:
            return ctx.fail("FMT-2LVL-NOHW", "EINVAL", level="WARN_ON",
                            detail="2-level table but ARM_SMMU_FEAT_2_LVL_STRTAB is clear (IDR0.ST_LEVEL!=1 or SIDSIZE<=8)")
        ctx.passed("FMT-2LVL-NOHW")
    return None


def two_level(ctx: Ctx) -> Stop | None:
    g = ctx.geometry
    assert g is not None
    if g.fmt != 1:
        return None
    sid_bits = ctx.regs.sid_bits
    if sid_bits is None:
        return ctx.unknown("2LVL-LOG2SIZE-RANGE", "IDR1.SIDSIZE")
    log2size, split = g.log2size, g.split
    if log2size < split or log2size > sid_bits:
        return ctx.fail("2LVL-LOG2SIZE-RANGE", "EINVAL", log2size, split, sid_bits,
                        detail=f"LOG2SIZE={log2size} SPLIT={split} SIDSIZE={sid_bits}")
    ctx.passed("2LVL-LOG2SIZE-RANGE")
    if split != L.STRTAB_SPLIT:
        return ctx.fail("2LVL-SPLIT", "EINVAL", split, L.STRTAB_SPLIT, detail=f"SPLIT={split}")
    ctx.passed("2LVL-SPLIT")
    shift = log2size - split
    if ctx.rs.l1_max == "pre-shift":
        if shift > 17:  # ilog2(STRTAB_MAX_L1_ENTRIES)
            return ctx.fail("2LVL-L1-MAX", "EINVAL", shift, L.STRTAB_MAX_L1_ENTRIES, detail=f"2^{shift} L1 entries")
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
            return ctx.fail("2LVL-L1-MAX", "EINVAL", num, L.STRTAB_MAX_L1_ENTRIES, detail=f"{num} L1 entries")
    ctx.passed("2LVL-L1-MAX", f"{num} L1 entries")
    ctx.num_l1 = num
    if ctx.rs.l1_align:
        size = num * 8
        if g.base % size:
            return ctx.fail("2LVL-L1-ALIGN", "EINVAL", pa(g.base), detail=f"base {g.base:#x} not aligned to the L1 size {size:#x}")
        ctx.passed("2LVL-L1-ALIGN")
    return None


def linear(ctx: Ctx) -> Stop | None:
    g = ctx.geometry
    assert g is not None
    if g.fmt != 0:
        return None
    sid_bits, f2 = ctx.regs.sid_bits, ctx.regs.feat_2lvl
    if sid_bits is None or f2 is None:
        return ctx.unknown("LIN-LOG2SIZE-MAX", "IDR0.ST_LEVEL and IDR1.SIDSIZE")
    if ctx.rs.linear_cap == "v4":
        cap = 25 if f2 else sid_bits  # ilog2(STRTAB_MAX_L1_ENTRIES * STRTAB_NUM_L2_STES)
    else:
        cap = min(sid_bits, 25) if f2 else sid_bits
    cap = min(cap, 31)
    if g.log2size > cap:
        return ctx.fail("LIN-LOG2SIZE-MAX", "EINVAL", g.log2size, cap, detail=f"LOG2SIZE={g.log2size}, cap {cap}")
    ctx.passed("LIN-LOG2SIZE-MAX", f"cap {cap}")
    ctx.num_ste = 1 << g.log2size
    if ctx.rs.linear_align:
        # (1U << log2size) * sizeof(struct arm_smmu_ste): the u32 is promoted to size_t, no wrap
        # (arm_smmu_kexec_parse_strtab_linear(), state E; log2size <= 25 here anyway)
        size = (1 << g.log2size) * 64
        if g.base % size:
            return ctx.fail("LIN-ALIGN", "EINVAL", pa(g.base), detail=f"base {g.base:#x} not aligned to the table size {size:#x}")
        ctx.passed("LIN-ALIGN")
    return None


CHECKS = (fmt, two_level, linear)

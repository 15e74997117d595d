"""Probe preconditions: is ARM_SMMU_OPT_KDUMP_ADOPT set at all? (adopt-rules.md 2.1)

PRE-KDUMP is assumed (we replay the kdump kernel).  A failed precondition means no adoption is
attempted: the kernel goes straight to its normal full reset (decision ``no-adopt``).
"""

from __future__ import annotations

from smmu_forensics.rules.base import Ctx, Stop
from smmu_forensics.smmu import fields as L

__all__ = ["smmuen", "coherent", "sfm"]


def smmuen(ctx: Ctx) -> Stop | None:
    """PRE-SMMUEN: the crashed kernel left CR0.SMMUEN set."""
    cr0 = ctx.regs.get("cr0")
    if cr0 is None:
        return ctx.unknown("PRE-SMMUEN", "CR0 (is SMMUEN still set?)")
    if not L.get(L.CR0, cr0, "SMMUEN"):
        return ctx.fail("PRE-SMMUEN", detail=f"CR0={cr0:#x}: SMMUEN=0: the crashed kernel left the SMMU disabled; "
                        "the kdump kernel resets it normally (silent)")
    ctx.passed("PRE-SMMUEN", f"CR0={cr0:#x}")
    return None


def coherent(ctx: Ctx) -> Stop | None:
    """PRE-COHERENT: the SMMU's table walks are coherent (firmware's word, else IDR0.COHACC)."""
    c = ctx.regs.coherent
    if c is None:
        return ctx.unknown("PRE-COHERENT", "IDR0 or --coherent/--no-coherent (is the SMMU coherent?)")
    if not c:
        return ctx.fail("PRE-COHERENT", detail=f"not coherent ({ctx.regs.coherent_basis})")
    ctx.passed("PRE-COHERENT", ctx.regs.coherent_basis)
    return None


def sfm(ctx: Ctx) -> Stop | None:
    """PRE-SFM: no active Service Failure Mode (GERROR.SFM_ERR != GERRORN.SFM_ERR)."""
    gerror, gerrorn = ctx.regs.get("gerror"), ctx.regs.get("gerrorn")
    if gerror is None:
        return ctx.unknown("PRE-SFM", "GERROR (is the SMMU in Service Failure Mode?)")
    if gerrorn is None:
        if L.get(L.GERROR, gerror, "SFM_ERR"):
            return ctx.unknown("PRE-SFM", "GERRORN (GERROR.SFM_ERR=1: active only if GERRORN.SFM_ERR=0)")
        ctx.v.notes.append("GERRORN not given: GERROR.SFM_ERR=0 taken as no active Service Failure Mode")
        gerrorn = gerror
    if L.get(L.GERROR, gerror ^ gerrorn, "SFM_ERR"):
        return ctx.fail("PRE-SFM", detail=f"GERROR.SFM_ERR active (GERROR={gerror:#x} GERRORN={gerrorn:#x})")
    ctx.passed("PRE-SFM", f"GERROR={gerror:#x}")
    return None

"""Probe preconditions: is ARM_SMMU_OPT_KDUMP_ADOPT set at all? (adopt-rules.md 2.1)

PRE-KDUMP is assumed (we replay the kdump kernel).  A failed precondition means no adoption is
attempted: the kernel goes straight to its normal full reset (decision ``no-adopt``).
"""

from __future__ import annotations

from smmu_forensics.rules.engine import Ctx, Stop
from smmu_forensics.smmu import fields as L


def smmuen(ctx: Ctx) -> Stop | None:
    cr0 = ctx.regs.get("cr0")
    if cr0 is None:
        return ctx.unknown("PRE-SMMUEN", "CR0 (is SMMUEN still set?)")
    if not cr0 & L.CR0_SMMUEN:
        ctx.v.trail.append(_step("PRE-SMMUEN", "fail", f"CR0={cr0:#x}: SMMUEN=0"))
        return Stop("no-adopt", "PRE-SMMUEN", None, None, None,
                    "CR0.SMMUEN=0: the crashed kernel left the SMMU disabled; the kdump kernel resets it normally (silent)")
    ctx.passed("PRE-SMMUEN", f"CR0={cr0:#x}")
    return None


def coherent(ctx: Ctx) -> Stop | None:
    c = ctx.regs.coherent
    if c is None:
        return ctx.unknown("PRE-COHERENT", "IDR0 or --coherent/--no-coherent (is the SMMU coherent?)")
    if not c:
        ctx.v.trail.append(_step("PRE-COHERENT", "fail", ctx.regs.coherent_basis))
        return Stop("no-adopt", "PRE-COHERENT", None, ctx.rs.msg("PRE-COHERENT"), "dev_warn",
                    f"not coherent ({ctx.regs.coherent_basis})")
    ctx.passed("PRE-COHERENT", ctx.regs.coherent_basis)
    return None


def sfm(ctx: Ctx) -> Stop | None:
    gerror, gerrorn = ctx.regs.get("gerror"), ctx.regs.get("gerrorn")
    if gerror is None:
        return ctx.unknown("PRE-SFM", "GERROR (is the SMMU in Service Failure Mode?)")
    if gerrorn is None:
        if gerror & L.GERROR_SFM_ERR:
            return ctx.unknown("PRE-SFM", "GERRORN (GERROR.SFM_ERR=1: active only if GERRORN.SFM_ERR=0)")
        ctx.v.notes.append("GERRORN not given: GERROR.SFM_ERR=0 taken as no active Service Failure Mode")
        gerrorn = gerror
    if (gerror ^ gerrorn) & L.GERROR_SFM_ERR:
        ctx.v.trail.append(_step("PRE-SFM", "fail", f"GERROR={gerror:#x} GERRORN={gerrorn:#x}"))
        return Stop("no-adopt", "PRE-SFM", None, ctx.rs.msg("PRE-SFM"), "dev_warn", "GERROR.SFM_ERR active")
    ctx.passed("PRE-SFM", f"GERROR={gerror:#x}")
    return None


def _step(rule: str, outcome: str, detail: str):  # type: ignore[no-untyped-def]
    from smmu_forensics.rules.engine import Step

    return Step(rule, outcome, detail)


CHECKS = (smmuen, coherent, sfm)

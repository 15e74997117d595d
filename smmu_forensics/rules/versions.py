"""The versions of "iommu/arm-smmu-v3: Fix device crash on kdump kernel", as data.

A :class:`Ruleset` names its checks in the kernel's order, and for every rule ID the decision,
errno, printk level and the exact message that kernel prints.  Rule IDs, conditions, errnos and
messages come from ../shared/reference/adopt-rules.md, which cites the patches ([P1v6]
f3d1f938a9b4 v6 1/7, [P1v7] 7a8e829adda9 v7 1/7) and the author's published branch; "latest" is
the branch's newest state ([GH-kexec-E] + [GH-kdump-E]), the best match for the posted v10.
Message prefixes: v6 and v7 write a literal ``"kdump: "`` in every string; in latest
``arm-smmu-v3-kdump.c`` defines ``dev_fmt "kdump: "`` while the helpers in
``arm-smmu-v3-kexec.c`` define none, so geometry and L1 messages carry no prefix there.

Adding the next version means adding one :class:`Ruleset` here (and a check in a family module
only if the version adds a new kind of check).

>>> [r for r in RULE_IDS["v6"]][:3]
['PRE-SMMUEN', 'PRE-COHERENT', 'PRE-SFM']
>>> VERSIONS["latest"].rule("SCAN-VMID").text()
'kdump: failed to reserve in-use ASIDs/VMIDs'
"""

from __future__ import annotations

from dataclasses import replace

from smmu_forensics.rules import geometry, l1, probe, scan
from smmu_forensics.rules.base import Decision, Errno, Level, Rule, Ruleset

__all__ = ["Rule", "Ruleset", "VERSIONS", "DEFAULT", "RULE_IDS", "V6", "V7", "LATEST"]


def _reset(msg: str | None, level: Level = Level.DEV_ERR) -> Rule:
    return Rule(Decision.RESET, msg, Errno.EINVAL, level)


_PROBE = {  # preconditions: no adoption attempted
    "PRE-SMMUEN": Rule(Decision.NO_ADOPT, None, None, None),  # silent
    "PRE-COHERENT": Rule(Decision.NO_ADOPT, "kdump: non-coherent SMMU unsupported; reset to block all DMAs", None, Level.DEV_WARN),
    "PRE-SFM": Rule(Decision.NO_ADOPT, "kdump: SMMU in Service Failure Mode, must reset", None, Level.DEV_WARN),
}
_FMT = {
    "FMT-INVALID": _reset("kdump: invalid STRTAB format %u"),
    "FMT-2LVL-NOHW": _reset("WARN_ON(!(smmu->features & ARM_SMMU_FEAT_2_LVL_STRTAB))", Level.WARN_ON),
}


_V6_RULES = {
    **_PROBE, **_FMT,
    "2LVL-LOG2SIZE-RANGE": _reset("kdump: log2size %u out of range [%u, %u]"),
    "2LVL-SPLIT": _reset("kdump: unsupported STRTAB_SPLIT %u (expected %u)"),
    "2LVL-L1-MAX": _reset("kdump: l1 entries %u exceeds max %u"),
    "L1-SPAN": _reset("kdump: L1[%u] unsupported span %u (vs %u)"),
    "LIN-LOG2SIZE-MAX": _reset("kdump: unsupported log2size %u (> %u)"),
}

_SCAN_FAIL = "kdump: failed to reserve in-use ASIDs/VMIDs"  # kdump.c prints one line for every scan failure
_LATEST_RULES = {
    **_PROBE, **_FMT,
    "2LVL-LOG2SIZE-RANGE": _reset("log2size %u out of range [%u, %u]"),
    "2LVL-SPLIT": _reset("unsupported STRTAB_SPLIT %u (expected %u)"),
    "2LVL-L1-MAX": _reset("l1 entries 2^%u exceeds max %u"),
    "2LVL-L1-ALIGN": _reset("unaligned l1 stream table base %s"),
    "L1-SPAN": _reset("L1[%u] unsupported span %u (vs %u)"),
    "L1-L2PTR-NULL": _reset("L1[%u] bad l2 table base %s"),
    "L1-L2PTR-ALIGN": _reset("L1[%u] bad l2 table base %s"),
    "LIN-LOG2SIZE-MAX": _reset("unsupported log2size %u (> %u)"),
    "LIN-ALIGN": _reset("unaligned stream table base %s"),
    **{r: _reset(_SCAN_FAIL, Level.DEV_WARN) for r in scan.RULES},
}

_CHECKS = (probe.smmuen, probe.coherent, probe.sfm, geometry.fmt, geometry.two_level, geometry.linear, l1.l1_descriptors)

V6 = Ruleset(
    name="v6",
    title="v6 (2026-05-20, 7 patches; the version under review)",
    checks=_CHECKS,
    rules=_V6_RULES,
    adopt_message="kdump: adopting crashed kernel's stream table",
    adopt_level=Level.DEV_INFO,
    fallback_message="kdump: falling back to full reset",
    l1_count_before_shift=False,
    l1_base_aligned=False,
    l1_null_l2ptr_rejects=False,
    l1_l2ptr_aligned=False,
    linear_cap_within_sidsize=False,
    linear_base_aligned=False,
    scan_checks_cd2l=False,
    scan_checks_cdtab_align=False,
    scan_checks_l1cd=False,
    source="v6 1/7 f3d1f938a9b4...1779265413.git.nicolinc@nvidia.com",
)

# v7 changes no rule: the adoption message became dev_dbg (cover letter v7) and cleanup details
# changed (FEAT_2LVL restored on fallback, CR0_ATSCHK update skipped) that a dump cannot show.
V7 = replace(
    V6,
    name="v7",
    title="v7 (2026-06-29, 7 patches)",
    adopt_level=Level.DEV_DBG,
    source="v7 1/7 7a8e829adda9...1782799827.git.nicolinc@nvidia.com",
)

LATEST = Ruleset(
    name="latest",
    title="latest (the author's branch, matching v10 of 2026-08-30)",
    checks=(*_CHECKS, scan.scan),
    rules=_LATEST_RULES,
    adopt_message="kdump: adopting crashed kernel's stream table",
    adopt_level=Level.DEV_DBG,
    fallback_message="kdump: falling back to full reset",
    l1_count_before_shift=True,
    l1_base_aligned=True,
    l1_null_l2ptr_rejects=True,
    l1_l2ptr_aligned=True,
    linear_cap_within_sidsize=True,
    linear_base_aligned=True,
    scan_checks_cd2l=True,
    scan_checks_cdtab_align=True,
    scan_checks_l1cd=True,
    source="nicolinc/iommufd arm-smmu-v3-kexec.c + pran005/linux arm-smmu-v3-kdump.c @14930f2f3413",
)

VERSIONS = {rs.name: rs for rs in (V6, V7, LATEST)}
DEFAULT = ("latest", "v6")

#: every rule ID a ruleset can return, in the order its checks meet them
RULE_IDS = {name: rs.rule_ids for name, rs in VERSIONS.items()}

"""The versions of "iommu/arm-smmu-v3: Fix device crash on kdump kernel", as data.

Rule IDs, conditions, errnos and message strings come from ../shared/reference/adopt-rules.md,
which cites the patches ([P1v6] f3d1f938a9b4 v6 1/7, [P1v7] 7a8e829adda9 v7 1/7) and the author's
branch states; "latest" is branch state E ([GH-kexec-E] + [GH-kdump-E]), the best match for the
posted v10.  Message prefixes: v6 and v7 write a literal ``"kdump: "`` in every string; in state E
``arm-smmu-v3-kdump.c`` defines ``dev_fmt "kdump: "`` while the helpers in
``arm-smmu-v3-kexec.c`` define none, so geometry and L1 messages carry no prefix there.

Adding the next version means adding one :class:`Ruleset` here (and a check in a family module
only if the version adds a new kind of check).
"""

from __future__ import annotations

from dataclasses import replace

from smmu_forensics.rules.engine import Ruleset

_COMMON = {
    "ADOPT": "kdump: adopting crashed kernel's stream table",
    "FALLBACK": "kdump: falling back to full reset",
    "PRE-COHERENT": "kdump: non-coherent SMMU unsupported; reset to block all DMAs",
    "PRE-SFM": "kdump: SMMU in Service Failure Mode, must reset",
    "FMT-INVALID": "kdump: invalid STRTAB format %u",
    "FMT-2LVL-NOHW": "WARN_ON(!(smmu->features & ARM_SMMU_FEAT_2_LVL_STRTAB))",
}

_V6_V7 = {
    **_COMMON,
    "2LVL-LOG2SIZE-RANGE": "kdump: log2size %u out of range [%u, %u]",
    "2LVL-SPLIT": "kdump: unsupported STRTAB_SPLIT %u (expected %u)",
    "2LVL-L1-MAX": "kdump: l1 entries %u exceeds max %u",
    "L1-SPAN": "kdump: L1[%u] unsupported span %u (vs %u)",
    "LIN-LOG2SIZE-MAX": "kdump: unsupported log2size %u (> %u)",
}

_LATEST = {
    **_COMMON,
    "2LVL-LOG2SIZE-RANGE": "log2size %u out of range [%u, %u]",
    "2LVL-SPLIT": "unsupported STRTAB_SPLIT %u (expected %u)",
    "2LVL-L1-MAX": "l1 entries 2^%u exceeds max %u",
    "2LVL-L1-ALIGN": "unaligned l1 stream table base %s",
    "L1-SPAN": "L1[%u] unsupported span %u (vs %u)",
    "L1-L2PTR-NULL": "L1[%u] bad l2 table base %s",
    "L1-L2PTR-ALIGN": "L1[%u] bad l2 table base %s",
    "LIN-LOG2SIZE-MAX": "unsupported log2size %u (> %u)",
    "LIN-ALIGN": "unaligned stream table base %s",
    "SCAN-FAIL": "kdump: failed to reserve in-use ASIDs/VMIDs",
}

V6 = Ruleset(
    name="v6",
    title="v6 (2026-05-20, 7 patches; the version under review)",
    messages=_V6_V7,
    l1_max="post-shift",
    l1_align=False,
    l1_null_reject=False,
    l2ptr_align=False,
    linear_cap="v4",
    linear_align=False,
    scan=False,
    scan_cd2l=False,
    scan_cdtab_align=False,
    scan_l1cd=False,
    adopt_msg_level="dev_info",
    source="v6 1/7 f3d1f938a9b4...1779265413.git.nicolinc@nvidia.com",
)

# v7 changes no rule: the adoption message became dev_dbg (cover letter v7) and cleanup details
# changed (FEAT_2LVL restored on fallback, CR0_ATSCHK update skipped) that a dump cannot show.
V7 = replace(
    V6,
    name="v7",
    title="v7 (2026-06-29, 7 patches)",
    adopt_msg_level="dev_dbg",
    source="v7 1/7 7a8e829adda9...1782799827.git.nicolinc@nvidia.com",
)

LATEST = Ruleset(
    name="latest",
    title="latest (branch state E, matching v10 of 2026-08-30)",
    messages=_LATEST,
    l1_max="pre-shift",
    l1_align=True,
    l1_null_reject=True,
    l2ptr_align=True,
    linear_cap="C",
    linear_align=True,
    scan=True,
    scan_cd2l=True,
    scan_cdtab_align=True,
    scan_l1cd=True,
    adopt_msg_level="dev_dbg",
    source="nicolinc/iommufd arm-smmu-v3-kexec.c + pran005/linux arm-smmu-v3-kdump.c @14930f2f3413 (state E)",
)

VERSIONS = {rs.name: rs for rs in (V6, V7, LATEST)}
DEFAULT = ("latest", "v6")

#: every rule ID a ruleset can return, with its family (for docs and the test that each is exercised)
RULE_IDS = {
    "v6": ["PRE-SMMUEN", "PRE-COHERENT", "PRE-SFM", "FMT-INVALID", "FMT-2LVL-NOHW", "2LVL-LOG2SIZE-RANGE",
           "2LVL-SPLIT", "2LVL-L1-MAX", "L1-SPAN", "LIN-LOG2SIZE-MAX"],
    "v7": ["PRE-SMMUEN", "PRE-COHERENT", "PRE-SFM", "FMT-INVALID", "FMT-2LVL-NOHW", "2LVL-LOG2SIZE-RANGE",
           "2LVL-SPLIT", "2LVL-L1-MAX", "L1-SPAN", "LIN-LOG2SIZE-MAX"],
    "latest": ["PRE-SMMUEN", "PRE-COHERENT", "PRE-SFM", "FMT-INVALID", "FMT-2LVL-NOHW", "2LVL-LOG2SIZE-RANGE",
               "2LVL-SPLIT", "2LVL-L1-MAX", "2LVL-L1-ALIGN", "L1-SPAN", "L1-L2PTR-NULL", "L1-L2PTR-ALIGN",
               "LIN-LOG2SIZE-MAX", "LIN-ALIGN", "SCAN-STE-CFG", "SCAN-VMID", "SCAN-CDTAB-NULL", "SCAN-CDTAB-CDMAX",
               "SCAN-CDTAB-FMT", "SCAN-CDTAB-CD2L", "SCAN-CDTAB-ALIGN", "SCAN-CD-ASID", "SCAN-L1CD-NULL",
               "SCAN-L1CD-ALIGN"],
}

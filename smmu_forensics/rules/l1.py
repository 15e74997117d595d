"""L1 descriptor checks at adopt time, and the deferred per-SID outcome (adopt-rules.md 2.4, 2.7).

Every L1 descriptor the kernel's loop visits (``num_l1_ents`` of them) gets a result:
``accept`` (populated; its L2 is adopted when a device on that bus range is inserted), ``fresh``
(skipped as unused; the kernel later allocates a fresh abort-filled L2 over it), ``reject``
(the whole adoption fails) or ``unknown`` (the descriptor is not in the dump).  For a static image
the deferred re-checks (DEF-SPAN, DEF-L2PTR) repeat what adopt already decided, so the deferred
outcome of a SID is the result of its L1 entry.
"""

from __future__ import annotations

import numpy as np

from smmu_forensics.rules.base import Ctx, L1Outcome, L1Result, L1Results, Stop, pa
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import vector

__all__ = ["l1_descriptors"]

LINUX_SPAN = L.STRTAB_SPLIT + 1  # the only span Linux writes (STRTAB_SPLIT + 1)


def _rules(ctx: Ctx, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(span, l2ptr, fresh, rule) per descriptor, in the kernel's order of tests for this version."""
    span = vector.field(L.L1STD, raw, "SPAN").astype(np.int64)
    l2 = raw & np.uint64(L.L1STD.field("L2PTR").linux_mask)
    rule = np.full(len(raw), "", dtype=object)
    if ctx.rs.l1_null_l2ptr_rejects:  # span 0 is unused; then span, NULL, alignment
        fresh = span == 0
        bad_span = ~fresh & (span != LINUX_SPAN)
        null = ~fresh & ~bad_span & (l2 == 0)
        rule[null] = "L1-L2PTR-NULL"
        if ctx.rs.l1_l2ptr_aligned:
            misal = ~fresh & ~bad_span & ~null & ((l2 % np.uint64(L.STRTAB_L2_BYTES)) != 0)
            rule[misal] = "L1-L2PTR-ALIGN"
    else:  # !span || !l2 -> skipped
        fresh = (span == 0) | (l2 == 0)
        bad_span = ~fresh & (span != LINUX_SPAN)
    rule[bad_span] = "L1-SPAN"
    return span, l2, fresh, rule


def l1_descriptors(ctx: Ctx) -> Stop | None:
    """L1-SPAN, L1-L2PTR-NULL, L1-L2PTR-ALIGN over the ``num_l1_ents`` descriptors, in index order."""
    num = ctx.num_l1  # set only when the 2-level geometry checks passed
    t = ctx.table
    if num is None:
        return None
    if t is None:
        return ctx.unknown("L1-SPAN", "the dump (no memory to read the L1 table from)")
    have = min(num, len(t.l1_raw))
    raw = t.l1_raw[:have]
    known = t.l1_known[:have]
    span, l2, fresh, rule = _rules(ctx, raw)
    reject = (rule != "") & known
    unknown = ~known
    visited = np.flatnonzero((raw != 0) | unknown)
    c = L1Results.CODES.index
    code = np.where(unknown, c(L1Outcome.UNKNOWN), np.where(reject, c(L1Outcome.REJECT),
                    np.where(fresh, c(L1Outcome.FRESH), c(L1Outcome.ACCEPT))))[visited]
    extra = [L1Result(have, L1Outcome.UNKNOWN, None, f"descriptors {have}..{num - 1} not walked")] if have < num else []

    def message(i: int, r: str) -> str:
        return ctx.rs.rule(r).text(*_args(r, i, int(span[i]), int(l2[i]))) or ""

    results = L1Results(visited, code, rule[visited], message, extra)
    ctx.v.l1 = results
    first_bad = int(np.flatnonzero(reject)[0]) if reject.any() else None
    first_unknown = int(np.flatnonzero(unknown)[0]) if unknown.any() else (have if have < num else None)
    if first_bad is not None:
        r = str(rule[first_bad])
        if first_unknown is not None and first_unknown < first_bad:
            ctx.uncertain(f"L1[{first_unknown}] precedes L1[{first_bad}] but is not in the dump: the kernel may have stopped there first")
        args = _args(r, first_bad, int(span[first_bad]), int(l2[first_bad]))
        return ctx.fail(r, *args, detail=f"L1[{first_bad}] = {int(raw[first_bad]):#018x}")
    if first_unknown is not None:
        return ctx.unknown("L1-SPAN", f"L1 descriptors from index {first_unknown} are not in the dump")
    n_acc = len(results.accepted())
    ctx.passed("L1-SPAN", f"{have} descriptors: {n_acc} populated and accepted, the rest unused")
    return None


def _args(rule: str, i: int, span: int, l2: int) -> tuple:
    """The printf arguments of the rule's message."""
    if rule == "L1-SPAN":
        return (i, span, LINUX_SPAN)
    return (i, pa(l2))

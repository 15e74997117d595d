"""The rule engine: replays one version of the kernel's kdump adopt decision.

A :class:`Ruleset` (see :mod:`.versions`) is data: which checks that kernel version makes and the
exact message it prints for each.  The checks are small functions grouped by family
(:mod:`.probe`, :mod:`.geometry`, :mod:`.l1`, :mod:`.scan`); each returns ``None`` to go on or a
:class:`Stop` that ends the decision.  Missing registers or memory give ``unknown``, never a guess.

Example::

    >>> v = evaluate(VERSIONS["latest"], regs, table)           # doctest: +SKIP
    >>> v.decision, v.rule
    ('adopt', None)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable

ERRNO = {"EINVAL": 22, "ENOMEM": 12, "EOPNOTSUPP": 95, "ERANGE": 34}  # include/uapi/asm-generic/errno*.h


@dataclass(frozen=True)
class Ruleset:
    """One version of the adopt series, as data."""

    name: str
    title: str
    #: rule ID -> message format (Python %-format of the kernel's printf string, dev_fmt prefix included)
    messages: dict[str, str]
    #: behaviour switches (see versions.py for their meaning)
    l1_max: str  # "post-shift" (v3-v7) or "pre-shift" (C, E, G)
    l1_align: bool
    l1_null_reject: bool
    l2ptr_align: bool
    linear_cap: str  # "v4" (FEAT_2LVL ? 25 : sid_bits) or "C" (min(sid_bits, 25 if FEAT_2LVL))
    linear_align: bool
    scan: bool
    scan_cd2l: bool
    scan_cdtab_align: bool
    scan_l1cd: bool
    adopt_msg_level: str  # dev_info (v1-v6) or dev_dbg (v7+)
    source: str

    def msg(self, rule: str, *args: Any) -> str:
        fmt = self.messages[rule]
        return fmt % args if args else fmt


@dataclass
class Step:
    rule: str
    outcome: str  # pass / fail / unknown / skip
    detail: str = ""


@dataclass
class L1Result:
    index: int
    result: str  # accept / reject / fresh / unknown
    rule: str | None = None
    message: str | None = None


@dataclass
class Verdict:
    ruleset: str
    decision: str  # adopt / reset / no-adopt / unknown
    rule: str | None = None
    errno: int | None = None
    errno_name: str | None = None
    message: str | None = None  # as the kernel prints it, dev_fmt prefix included
    level: str | None = None  # dev_err / dev_warn / WARN_ON / dev_info / dev_dbg
    detail: str = ""  # what exactly the rule saw (SID, value), in the tool's words
    kernel_log: list[str] = field(default_factory=list)  # the lines this kernel would print, in order
    l1: list[L1Result] = field(default_factory=list)
    trail: list[Step] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # what is missing for a definite answer
    notes: list[str] = field(default_factory=list)


@dataclass
class Stop:
    """Ends the decision: reset (adopt failed), no-adopt (preconditions) or unknown."""

    decision: str
    rule: str | None
    errno: str | None = None
    message: str | None = None
    level: str | None = "dev_err"
    detail: str = ""


class Ctx:
    """What a check can see: the ruleset, the registers, the walked table, and the verdict so far."""

    def __init__(self, rs: Ruleset, regs: Registers, table: StreamTable | None) -> None:
        from smmu_forensics.smmu.table import geometry

        self.rs = rs
        self.regs = regs
        self.table = table
        self.geometry = table.geometry if table is not None else geometry(regs)  # None: registers unknown
        self.num_l1: int | None = None  # num_l1_ents as the kernel computed it (2-level geometry passed)
        self.num_ste: int | None = None  # linear num_ents (linear geometry passed)
        self.v = Verdict(rs.name, "adopt")

    def passed(self, rule: str, detail: str = "") -> None:
        self.v.trail.append(Step(rule, "pass", detail))

    def fail(self, rule: str, errno: str, *args: Any, level: str = "dev_err", detail: str = "") -> Stop:
        self.v.trail.append(Step(rule, "fail", detail))
        if rule.startswith("SCAN-"):  # the scan's helpers print nothing; kdump.c prints one line for all
            msg: str | None = self.rs.msg("SCAN-FAIL")
        else:
            msg = self.rs.msg(rule, *args) if rule in self.rs.messages else None
        return Stop("reset", rule, errno, msg, level, detail)

    def unknown(self, rule: str, what: str) -> Stop:
        self.v.trail.append(Step(rule, "unknown", what))
        self.v.unknown.append(what)
        return Stop("unknown", rule, None, None, None, what)

    def need(self, rule: str, **values: Any) -> Stop | None:
        """Unknown unless every named register-derived value is known."""
        missing = [k for k, v in values.items() if v is None]
        if missing:
            return self.unknown(rule, f"{rule} needs {', '.join(missing)} (not given)")
        return None


Check = Callable[[Ctx], "Stop | None"]


def pa(addr: int) -> str:
    """The kernel's %pa: 0x + 16 lowercase hex digits of a 64-bit phys_addr_t."""
    return f"0x{addr & ((1 << 64) - 1):016x}"


def evaluate(rs: Ruleset, regs: Registers, table: StreamTable | None) -> Verdict:
    """Replay ``rs`` over the registers and the walked table."""
    from smmu_forensics.rules import geometry, l1, probe, scan

    ctx = Ctx(rs, regs, table)
    stop: Stop | None = None
    for check in (*probe.CHECKS, *geometry.CHECKS, *l1.CHECKS, *(scan.CHECKS if rs.scan else ())):
        stop = check(ctx)
        if stop is not None:
            break
    v = ctx.v
    dev = f"arm-smmu-v3 {regs.base:x}.smmuv3: " if regs.base is not None else "arm-smmu-v3 <device>: "
    if stop is None:
        v.decision = "adopt"
        v.kernel_log.append(f"{dev}{rs.msg('ADOPT')}  ({rs.adopt_msg_level})")
        return v
    v.decision, v.rule, v.message, v.level, v.detail = stop.decision, stop.rule, stop.message, stop.level, stop.detail
    if stop.errno:
        v.errno_name = stop.errno
        v.errno = -ERRNO[stop.errno]
    if stop.message:
        v.kernel_log.append(f"{dev}{stop.message}  ({stop.level})")
    if stop.decision == "reset":
        v.kernel_log.append(f"{dev}{rs.msg('FALLBACK')}  (dev_warn)")
    return v

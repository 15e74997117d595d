"""What every check sees and returns: typed states, the verdict, the context a check reads.

Check families (:mod:`.probe`, :mod:`.geometry`, :mod:`.l1`, :mod:`.scan`) import this module
only; :mod:`.versions` names each ruleset's checks in order; :mod:`.engine` runs them.

>>> Decision.ADOPT == "adopt", Outcome.FAIL.value
(True, 'fail')
>>> pa(0x431be000)
'0x00000000431be000'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, overload

import numpy as np

from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import Geometry, StreamTable, geometry

__all__ = ["Rule", "Ruleset", "Decision", "Outcome", "L1Outcome", "Level", "Errno", "Step", "L1Result", "Verdict", "Stop", "Ctx", "Check", "pa"]


class Decision(str, Enum):
    """What the kdump kernel does with the crashed kernel's table."""

    ADOPT = "adopt"  # keeps the SMMU enabled over the adopted table
    RESET = "reset"  # adoption tried and failed: full reset, in-flight DMA aborted
    NO_ADOPT = "no-adopt"  # a precondition failed: adoption not even tried, normal reset
    UNKNOWN = "unknown"  # the dump or the registers lack what a check needs


class Outcome(str, Enum):
    """One check's result in the trail."""

    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


class L1Outcome(str, Enum):
    """What adopt does with one L1 descriptor."""

    ACCEPT = "accept"  # populated and sane: its L2 is adopted
    FRESH = "fresh"  # skipped as unused: a fresh abort-filled L2 replaces it later
    REJECT = "reject"  # fails the whole adoption
    UNKNOWN = "unknown"  # not in the dump


class Level(str, Enum):
    """How the kernel prints a message (printk level or WARN_ON)."""

    DEV_ERR = "dev_err"
    DEV_WARN = "dev_warn"
    DEV_INFO = "dev_info"
    DEV_DBG = "dev_dbg"
    WARN_ON = "WARN_ON"


class Errno(int, Enum):
    """The errnos adopt returns (include/uapi/asm-generic/errno-base.h, errno.h)."""

    ENOMEM = 12
    EINVAL = 22
    ERANGE = 34
    EOPNOTSUPP = 95


@dataclass
class Step:
    rule: str
    outcome: Outcome
    detail: str = ""


@dataclass
class L1Result:
    index: int
    result: L1Outcome
    rule: str | None = None
    message: str | None = None


class L1Results(Sequence[L1Result]):
    """Every visited descriptor's result, held as columns (an index and an outcome code each, the
    reject rule where there is one) and made into :class:`L1Result` when asked: 2^17 descriptors
    times three rulesets cost 3 MB, not 100 MB of objects.  ``message(i, rule)`` writes a reject's
    kernel message on demand; ``extra`` is appended after the columns.

    >>> r = L1Results(np.array([0, 3]), np.array([0, 2], dtype=np.uint8), np.array(["", "L1-SPAN"], dtype=object),
    ...               lambda i, rule: f"L1[{i}] {rule}")
    >>> [(x.index, x.result.value, x.rule, x.message) for x in r]
    [(0, 'accept', None, None), (3, 'reject', 'L1-SPAN', 'L1[3] L1-SPAN')]
    >>> r.accepted().tolist(), len(r)
    ([0], 2)
    """

    CODES = (L1Outcome.ACCEPT, L1Outcome.FRESH, L1Outcome.REJECT, L1Outcome.UNKNOWN)

    def __init__(self, index: np.ndarray, code: np.ndarray, rule: np.ndarray,
                 message: Callable[[int, str], str] | None = None, extra: list[L1Result] | None = None) -> None:
        self.idx, self.code, self.rule = index.astype(np.int64), code.astype(np.uint8), rule
        self._message = message
        self.extra = list(extra or [])

    def __len__(self) -> int:
        return len(self.idx) + len(self.extra)

    def _one(self, k: int) -> L1Result:
        if k >= len(self.idx):
            return self.extra[k - len(self.idx)]
        i, outcome = int(self.idx[k]), self.CODES[int(self.code[k])]
        if outcome is L1Outcome.UNKNOWN:
            return L1Result(i, outcome, None, "descriptor not in the dump")
        if outcome is L1Outcome.REJECT:
            rule = str(self.rule[k])
            return L1Result(i, outcome, rule, self._message(i, rule) if self._message else None)
        return L1Result(i, outcome)

    @overload
    def __getitem__(self, k: int) -> L1Result: ...

    @overload
    def __getitem__(self, k: slice) -> list[L1Result]: ...

    def __getitem__(self, k: int | slice) -> L1Result | list[L1Result]:
        if isinstance(k, slice):
            return [self._one(j) for j in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self._one(k)

    def __iter__(self) -> Iterator[L1Result]:
        return (self._one(j) for j in range(len(self)))

    def accepted(self) -> np.ndarray:
        """Indices of the descriptors whose L2 is adopted."""
        return self.idx[self.code == self.CODES.index(L1Outcome.ACCEPT)]


def no_l1_results() -> L1Results:
    return L1Results(np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, dtype=object))


@dataclass
class Verdict:
    ruleset: str
    decision: Decision
    rule: str | None = None
    errno: int | None = None
    errno_name: str | None = None
    message: str | None = None  # as the kernel prints it, dev_fmt prefix included
    level: Level | None = None
    detail: str = ""  # what exactly the rule saw (SID, value), in the tool's words
    kernel_log: list[str] = field(default_factory=list)  # the lines this kernel would print, in order
    l1: L1Results = field(default_factory=no_l1_results)
    trail: list[Step] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # what is missing for a definite answer
    notes: list[str] = field(default_factory=list)
    #: False when memory the kernel reads before the failure found is missing: the decision holds
    #: (a later failure rejects the table either way) but an earlier, unseen rule may be the one printed
    rule_certain: bool = True


@dataclass
class Stop:
    """Ends the decision: reset (adopt failed), no-adopt (preconditions) or unknown."""

    decision: Decision
    rule: str | None
    errno: Errno | None = None
    message: str | None = None
    level: Level | None = Level.DEV_ERR
    detail: str = ""


class Ctx:
    """What a check can see: the ruleset, the registers, the walked table, and the verdict so far."""

    def __init__(self, rs: Ruleset, regs: Registers, table: StreamTable | None) -> None:
        self.rs = rs
        self.regs = regs
        self.table = table
        self.geometry: Geometry | None = table.geometry if table is not None else geometry(regs)  # None: registers unknown
        self.num_l1: int | None = None  # num_l1_ents as the kernel computed it (2-level geometry passed)
        self.num_ste: int | None = None  # linear num_ents (linear geometry passed)
        self.v = Verdict(rs.name, Decision.ADOPT)

    def passed(self, rule: str, detail: str = "") -> None:
        self.v.trail.append(Step(rule, Outcome.PASS, detail))

    def fail(self, rule: str, *args: Any, detail: str = "") -> Stop:
        """The kernel's failure for ``rule``: errno, level and message from the ruleset's data."""
        self.v.trail.append(Step(rule, Outcome.FAIL, detail))
        r = self.rs.rule(rule)
        return Stop(r.decision, rule, r.errno, r.text(*args), r.level, detail)

    def unknown(self, rule: str, what: str) -> Stop:
        self.v.trail.append(Step(rule, Outcome.UNKNOWN, what))
        self.v.unknown.append(what)
        return Stop(Decision.UNKNOWN, rule, None, None, None, what)

    def uncertain(self, what: str) -> None:
        """The failure found is certain to reject, but memory before it is missing (``unknown`` says what)."""
        self.v.rule_certain = False
        self.v.unknown.append(what)

    def need(self, rule: str, **values: Any) -> Stop | None:
        """Unknown unless every named register-derived value is known."""
        missing = [k for k, v in values.items() if v is None]
        if missing:
            return self.unknown(rule, f"{rule} needs {', '.join(missing)} (not given)")
        return None


Check = Callable[[Ctx], "Stop | None"]


@dataclass(frozen=True)
class Rule:
    """What the kernel does when one rule fails."""

    decision: Decision
    message: str | None  # %-format of the kernel's printf string, dev_fmt prefix included; None: silent
    errno: Errno | None = Errno.EINVAL
    level: Level | None = Level.DEV_ERR

    def text(self, *args: Any) -> str | None:
        if self.message is None:
            return None
        return self.message % args if args else self.message


@dataclass(frozen=True)
class Ruleset:
    """One version of the adopt series, as data."""

    name: str
    title: str
    checks: tuple[Check, ...]  # in the kernel's order
    rules: dict[str, Rule]  # every rule ID the checks can fail with
    adopt_message: str
    adopt_level: Level  # dev_info (v6) or dev_dbg (v7 on): invisible in dmesg by default
    fallback_message: str
    # Behaviours that differ between versions, named for what they do:
    l1_count_before_shift: bool  # 2LVL-L1-MAX compares log2size - split with 17 before computing 1 << n
    l1_base_aligned: bool  # 2LVL-L1-ALIGN: the L1 table base must be aligned to its size
    l1_null_l2ptr_rejects: bool  # a span with L2Ptr 0 rejects (else the descriptor is skipped as unused)
    l1_l2ptr_aligned: bool  # L1-L2PTR-ALIGN: L2Ptr must be 16 KiB aligned
    linear_cap_within_sidsize: bool  # linear cap is min(SIDSIZE, 25) (else 25 whenever 2-level HW)
    linear_base_aligned: bool  # LIN-ALIGN: the linear table base must be aligned to its size
    scan_checks_cd2l: bool
    scan_checks_cdtab_align: bool
    scan_checks_l1cd: bool
    source: str

    def rule(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    @property
    def rule_ids(self) -> list[str]:
        return list(self.rules)




def pa(addr: int) -> str:
    """The kernel's %pa: 0x + 16 lowercase hex digits of a 64-bit phys_addr_t."""
    return f"0x{addr & ((1 << 64) - 1):016x}"

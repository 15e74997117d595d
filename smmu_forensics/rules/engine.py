"""The rule engine: replays one version of the kernel's kdump adopt decision.

A :class:`~.versions.Ruleset` is data: its checks in the kernel's order and, per rule ID, the
decision, errno, level and message.  Each check returns ``None`` to go on or a
:class:`~.base.Stop` that ends the decision.  Missing registers or memory give ``unknown``,
never a guess.

>>> from smmu_forensics.smmu.registers import Registers
>>> regs = Registers.from_mapping({"strtab_base_cfg": 0x30210, "strtab_base": 0x431be000, "idr0": 0x0D40101A,
...                                "idr1": 0x02730010, "cr0": 0xD, "gerror": 0})
>>> v = evaluate(VERSIONS["v6"], regs, None)
>>> v.decision.value, v.rule, v.message
('reset', 'FMT-INVALID', 'kdump: invalid STRTAB format 3')
"""

from __future__ import annotations

from smmu_forensics.rules.base import Ctx as Ctx
from smmu_forensics.rules.base import Decision, Level, Stop, Verdict
from smmu_forensics.rules.versions import VERSIONS, Ruleset
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable

__all__ = ["evaluate", "VERSIONS"]


def evaluate(rs: Ruleset, regs: Registers, table: StreamTable | None) -> Verdict:
    """Replay ``rs`` over the registers and the walked table."""
    ctx = Ctx(rs, regs, table)
    stop: Stop | None = None
    for check in rs.checks:
        stop = check(ctx)
        if stop is not None:
            break
    v = ctx.v
    dev = f"arm-smmu-v3 {regs.base:x}.smmuv3: " if regs.base is not None else "arm-smmu-v3 <device>: "
    if stop is None:
        v.decision = Decision.ADOPT
        v.kernel_log.append(f"{dev}{rs.adopt_message}  ({rs.adopt_level.value})")
        return v
    v.decision, v.rule, v.message, v.level, v.detail = stop.decision, stop.rule, stop.message, stop.level, stop.detail
    if stop.errno is not None:
        v.errno_name = stop.errno.name
        v.errno = -stop.errno.value
    if stop.message and stop.level is not None:
        v.kernel_log.append(f"{dev}{stop.message}  ({stop.level.value})")
    if stop.decision is Decision.RESET:
        v.kernel_log.append(f"{dev}{rs.fallback_message}  ({Level.DEV_WARN.value})")
    return v

"""The one place that runs the pipeline: open the dump, decode each SMMU, judge it, return a typed result.

::

    dumps/ (PhysicalMemory) -> smmu/ (Snapshot per SMMU) -> rules/ (Verdicts, Findings) -> Analysis

>>> from smmu_forensics.smmu.registers import load_register_file
>>> regs = load_register_file("fixtures/qemu-panic-carved.elf.smmu.json")
>>> with open_memory("fixtures/qemu-panic-carved.elf") as mem:
...     a = analyze(mem, regs, ["latest", "v6"])
>>> [(name, v.decision.value) for name, v in a.smmus[0].verdicts.items()], a.exit_code
([('latest', 'adopt'), ('v6', 'adopt')], 0)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.dumps.sniff import Progress, open_dump, parse_int
from smmu_forensics.errors import EXIT_OK, EXIT_REJECTED, EXIT_UNKNOWN, UnknownFormat
from smmu_forensics.rules.base import Decision, Verdict
from smmu_forensics.rules.engine import evaluate
from smmu_forensics.rules.findings import Finding, Severity, find
from smmu_forensics.rules.versions import DEFAULT, VERSIONS
from smmu_forensics.smmu.registers import Registers, find_sidecar
from smmu_forensics.smmu.snapshot import Snapshot, decode

__all__ = ["Analysis", "DumpSummary", "SmmuResult", "analyze", "analyze_smmu", "open_memory", "rulesets", "exit_code"]


@dataclass
class SmmuResult:
    """One SMMU: what was decoded, what each ruleset decides, what else is wrong."""

    snapshot: Snapshot
    verdicts: dict[str, Verdict]
    findings: list[Finding]

    @property
    def regs(self) -> Registers:
        return self.snapshot.regs


@dataclass
class DumpSummary:
    path: str
    format: str
    page_size: int
    osrelease: str | None


@dataclass
class Analysis:
    """Every SMMU of one dump under the selected rulesets; ``exit_code`` as README's table says."""

    dump: DumpSummary | None
    rulesets: list[str]
    smmus: list[SmmuResult] = field(default_factory=list)
    fail_on: Severity | None = None

    @property
    def exit_code(self) -> int:
        return exit_code(self.smmus, self.fail_on)


def rulesets(names: Sequence[str] = ()) -> list[str]:
    """The rulesets to replay: the default pair, ``all`` (newest first), or the names given, once each.

    >>> rulesets(()), rulesets(("all",)), rulesets(("v6", "v6"))
    (['latest', 'v6'], ['latest', 'v7', 'v6'], ['v6'])
    """
    if not names:
        return list(DEFAULT)
    if "all" in names:
        return list(reversed(VERSIONS))
    return list(dict.fromkeys(names))


def open_memory(dump: str, raw_base: int | None = None, progress: Progress | None = None) -> PhysicalMemory:
    """Open a dump; a headerless file whose sidecar records ``raw_base`` opens as raw memory there."""
    try:
        return open_dump(dump, raw_base=raw_base, progress=progress)
    except UnknownFormat as exc:
        side = find_sidecar(dump) if raw_base is None else None
        if side is None:
            raise
        try:
            with open(side) as f:
                side_base = json.load(f).get("raw_base")
        except (OSError, ValueError, AttributeError, RecursionError):
            raise exc from None
        if side_base is None:
            raise
        return open_dump(dump, raw_base=parse_int(str(side_base), f"raw_base in {side}"), progress=progress)


def analyze_smmu(mem: PhysicalMemory | None, regs: Registers, names: Sequence[str], max_stes: int | None = None) -> SmmuResult:
    """Decode one SMMU's tables (when there is memory) and judge them under each ruleset."""
    snap = decode(mem, regs, max_stes)
    verdicts = {name: evaluate(VERSIONS[name], regs, snap.table) for name in names}
    return SmmuResult(snap, verdicts, find(snap))


def analyze(mem: PhysicalMemory | None, smmus: Sequence[Registers], names: Sequence[str],
            fail_on: Severity | None = None, max_stes: int | None = None) -> Analysis:
    """The whole pipeline over every SMMU of one dump (``mem`` None: registers alone)."""
    dump = None
    if mem is not None:
        dump = DumpSummary(mem.path, mem.format_name, mem.page_size, mem.vmcoreinfo().get("OSRELEASE"))
    a = Analysis(dump, list(names), fail_on=fail_on)
    a.smmus = [analyze_smmu(mem, r, names, max_stes) for r in smmus]
    return a


def exit_code(smmus: Sequence[SmmuResult], fail_on: Severity | None = None) -> int:
    """0 adopted, 1 rejected/not adoptable (or a finding at ``fail_on`` or worse), 4 unknown."""
    decisions = [v.decision for s in smmus for v in s.verdicts.values()]
    if any(d in (Decision.RESET, Decision.NO_ADOPT) for d in decisions):
        return EXIT_REJECTED
    if fail_on is not None and any(f.severity.at_least(fail_on) for s in smmus for f in s.findings):
        return EXIT_REJECTED
    if any(d is Decision.UNKNOWN for d in decisions) or not decisions:
        return EXIT_UNKNOWN
    return EXIT_OK

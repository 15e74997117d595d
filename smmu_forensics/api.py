"""The Python API: what a script, a notebook or a drgn session needs, typed and small.

:func:`inspect` runs the same pipeline as ``smmu-forensics inspect`` (open, find or take the
registers, decode, judge) and returns an :class:`Inspection`: the typed :class:`~.analysis.Analysis`,
the report model (the JSON document), and its renderings.

>>> from smmu_forensics import inspect
>>> r = inspect("fixtures/qemu-panic-carved.elf")          # registers from the sidecar file
>>> [(v.decision.value, v.rule) for v in r.analysis.smmus[0].verdicts.values()], r.exit_code
([('adopt', None), ('adopt', None)], 0)
>>> r.report["smmus"][0]["table"]["base"]
'0x431be000'
>>> print(r.text(width=120).splitlines()[2])
smmu@0x9050000 latest ADOPT: arm-smmu-v3 9050000.smmuv3: kdump: adopting crashed kernel's stream table  (dev_dbg)

Inside ``drgn -c vmcore`` (or on a live system as root), the same over drgn's own memory reader::

    from smmu_forensics import inspect
    print(inspect(prog).text())              # prog: the session's drgn.Program
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smmu_forensics.analysis import Analysis, analyze, discover_registers, open_memory, rulesets
from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.report import model
from smmu_forensics.report.types import Report
from smmu_forensics.smmu.registers import Registers, find_sidecar, load_register_file

__all__ = ["Inspection", "inspect", "memory_of"]


@dataclass
class Inspection:
    """One inspection: the typed result and the report built from it."""

    analysis: Analysis
    report: Report

    @property
    def exit_code(self) -> int:
        """What ``smmu-forensics inspect`` would exit with (README's table)."""
        return self.analysis.exit_code

    def text(self, width: int = 100) -> str:
        """The terminal report as plain text, ``width`` columns wide."""
        from rich.console import Console

        from smmu_forensics.report import terminal

        buf = io.StringIO()
        terminal.render(self.report, Console(file=buf, width=width, no_color=True, highlight=False, soft_wrap=False))
        return buf.getvalue()

    def markdown(self) -> str:
        """The Markdown report (for a bug tracker)."""
        from smmu_forensics.report import markdown

        return markdown.render(self.report)

    def json(self) -> str:
        """The JSON report (``--format json``, schema.json)."""
        from smmu_forensics.report import jsonout

        buf = io.StringIO()
        jsonout.write(self.report, buf, pretty=True)
        return buf.getvalue()

    def __str__(self) -> str:
        return self.text()


def memory_of(source: Any) -> tuple[PhysicalMemory, bool]:
    """A :class:`PhysicalMemory` for a dump path, a ``drgn.Program`` or a memory already open;
    the flag says whether the caller opened it (and must close it)."""
    if isinstance(source, PhysicalMemory):
        return source, False
    if isinstance(source, (str, os.PathLike)):
        return open_memory(os.fspath(source)), True
    if hasattr(source, "read") and hasattr(source, "core_dump_path"):  # a drgn.Program (duck-typed: drgn stays optional)
        from smmu_forensics.dumps.drgnmem import DrgnMemory

        return DrgnMemory(source), True
    raise TypeError(f"inspect() takes a dump path, a drgn.Program or a PhysicalMemory, not {type(source).__name__}")


def inspect(source: Any, regs: str | Sequence[Registers] | None = None, rules: Sequence[str] = (),
            list_all: bool = False, sid: int | None = None) -> Inspection:
    """Inspect every SMMU of a dump (path), a drgn program or an open memory.

    ``regs``: a register file path or register sets; by default the dump's sidecar
    (``DUMP.smmu.json``) or, failing that, what the dump itself shows (as ``inspect`` with no
    ``--regs``).  ``rules``: ruleset names (default latest and v6; ``["all"]``).
    """
    mem, owned = memory_of(source)
    try:
        if isinstance(regs, (str, os.PathLike)):
            smmus = load_register_file(os.fspath(regs))
        elif regs is not None:
            smmus = list(regs)
        else:
            side = find_sidecar(mem.path) if isinstance(source, (str, os.PathLike)) else None
            smmus = load_register_file(side) if side else []
        found: list = []
        if not any("strtab_base" in r.values for r in smmus):
            _, smmus, found = discover_registers(mem)
        a = analyze(mem, smmus, rulesets(rules), found=found)
        return Inspection(a, json.loads(json.dumps(model.build(a, list_all, sid), default=_listing)))
    finally:
        if owned:
            mem.close()


def _listing(obj: Any) -> Any:
    """The report's lazy listings (STEs) made concrete, so the report outlives the memory."""
    return list(obj)

"""One decoded snapshot per SMMU: its registers, its walked stream table, what DMA could reach.

The decode layer's single product; the rules judge it without reading memory again.

>>> from smmu_forensics.dumps.sniff import open_dump
>>> from smmu_forensics.smmu.registers import load_register_file
>>> regs = load_register_file("fixtures/qemu-panic-carved.elf.smmu.json")[0]
>>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
...     snap = decode(mem, regs)
>>> snap.table.geometry.format.value, len(snap.reach.contexts)
('2lvl', 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu.reach import Reach, walk_reach
from smmu_forensics.smmu.recorded import DriverCopy
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable, walk

__all__ = ["Snapshot", "decode"]


@dataclass
class Snapshot:
    """What the dump (and the registers) say about one SMMU, decoded, not judged."""

    regs: Registers
    table: StreamTable | None = None  # None: no table registers, or no dump
    reach: Reach = field(default_factory=Reach)
    #: the driver's own register copies found in the dump (None: not searched), to check given registers against
    recorded: list[DriverCopy] | None = None


def decode(mem: PhysicalMemory | None, regs: Registers, max_stes: int | None = None,
           recorded: list[DriverCopy] | None = None) -> Snapshot:
    """Walk the table the registers describe, its CD tables and the IO page tables behind them."""
    if mem is None:
        return Snapshot(regs)
    t = walk(mem, regs, max_stes=max_stes or None)
    return Snapshot(regs, t, walk_reach(mem, t) if t is not None else Reach(), recorded)

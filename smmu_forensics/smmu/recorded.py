"""What the crashed kernel recorded of its own stream-table registers: the arm-smmu-v3 driver's
``struct arm_smmu_strtab_cfg`` as :mod:`smmu_forensics.discover.driver` finds it in memory.  A decoded
record (no memory access here): the rules compare registers given by hand against it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DriverCopy"]


@dataclass(frozen=True)
class DriverCopy:
    """One ``arm_smmu_strtab_cfg`` (6.1 layout) and the widths stored before it."""

    addr: int  # physical address of strtab_cfg
    strtab_va: int
    strtab_dma: int
    num_l1_ents: int
    strtab_base: int | None  # as stored (6.1); None where the kernel keeps no register value (6.12)
    strtab_base_cfg: int | None
    sid_bits: int | None = None
    ssid_bits: int | None = None
    asid_bits: int | None = None
    vmid_bits: int | None = None
    ias: int | None = None
    oas: int | None = None
    #: "6.1"/"pre-5.10": the register values as stored; "6.12": rebuilt from l1_dma and num_l1_ents;
    #: "6.12-linear": from ste_dma and num_ents (kept in ``strtab_dma``/``num_l1_ents``)
    layout: str = "6.1"

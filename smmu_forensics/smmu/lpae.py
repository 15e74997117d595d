"""VMSAv8-64 (LPAE) translation-table descriptors, as the SMMU walks them for stage 1 and stage 2.

Declared once with :mod:`.fields` machinery; the page-table walk (:mod:`.pgtable`) reads them and
synth writes them.  Sources: Arm ARM D8.3 (VMSAv8-64 translation table format descriptors),
Linux ``drivers/iommu/io-pgtable-arm.c`` (``ARM_LPAE_PTE_*``; [LP] in smmuv3-layouts.md section 6).

>>> pte = 0x0040_0000_4100_0783  # XN, OA 0x41000000, AF, AP[2] (read-only), page
>>> hex(get(LPAE_S1, pte, "OA")), get(LPAE_S1, pte, "AP"), DescType(get(LPAE_S1, pte, "TYPE")).name
('0x41000000', 2, 'TABLE_OR_PAGE')
"""

from __future__ import annotations

from enum import IntEnum

from smmu_forensics.smmu.fields import F, _complete, get

__all__ = ["LPAE_S1", "LPAE_S2", "DescType", "AP_RDONLY", "S2AP_WRITE", "get"]


class DescType(IntEnum):
    """Descriptor bits[1:0]: 0bx0 invalid; 0b01 block (levels 1-2; reserved at level 3); 0b11 table
    (levels 0-2) or page (level 3)."""

    INVALID = 0
    BLOCK = 1
    TABLE_OR_PAGE = 3


LPAE_S1 = _complete("LPAE_S1", 8, [
    F("TYPE", 0, 1, 0), F("ATTRINDX", 0, 4, 2, doc="MAIR index (ARM_LPAE_PTE_ATTRINDX)"), F("NS", 0, 5),
    F("AP", 0, 7, 6, doc="AP[2:1]; AP[2] (bit 7) set = read-only (ARM_LPAE_PTE_AP_RDONLY)"),
    F("SH", 0, 9, 8, enum={0: "NSH", 2: "OSH", 3: "ISH"}), F("AF", 0, 10, doc="access flag (ARM_LPAE_PTE_AF)"),
    F("NG", 0, 11), F("OA", 0, 47, 12, addr=True, doc="output address (ARM_LPAE_PTE_ADDR_MASK, 4K..64K granules)"),
    F("DBM", 0, 51), F("CONT", 0, 52), F("PXN", 0, 53), F("XN", 0, 54),
], "Arm ARM D8.3, io-pgtable-arm.c ARM_LPAE_PTE_*")

LPAE_S2 = _complete("LPAE_S2", 8, [
    F("TYPE", 0, 1, 0), F("MEMATTR", 0, 5, 2, doc="stage-2 memory attributes (ARM_LPAE_PTE_MEMATTR_*)"),
    F("S2AP", 0, 7, 6, doc="S2AP[1] (bit 7) write, S2AP[0] (bit 6) read (ARM_LPAE_PTE_HAP_*)"),
    F("SH", 0, 9, 8, enum={0: "NSH", 2: "OSH", 3: "ISH"}), F("AF", 0, 10),
    F("OA", 0, 47, 12, addr=True), F("DBM", 0, 51), F("CONT", 0, 52), F("XN", 0, 54, 53),
], "Arm ARM D8.3, io-pgtable-arm.c ARM_LPAE_PTE_*")

AP_RDONLY = 1 << LPAE_S1.field("AP").hi  # ARM_LPAE_PTE_AP_RDONLY: AP[2]
S2AP_WRITE = 1 << LPAE_S2.field("S2AP").hi  # ARM_LPAE_PTE_HAP_WRITE: S2AP[1]
S2AP_READ = 1 << LPAE_S2.field("S2AP").lo  # ARM_LPAE_PTE_HAP_READ: S2AP[0]

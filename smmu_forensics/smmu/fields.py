"""Every SMMUv3 bit layout, declared once.

A layout is a tuple of :class:`Field` (name, 64-bit word, hi bit, lo bit).  The Construct schemas
(:mod:`.schemas`) and the numpy decoders (:mod:`.vector`) are *generated* from these tables, and a
property test holds the two equal.  Bits no field names are covered by generated ``rsvd_*``
fields, so build(parse(x)) == x for every input.

Sources (see ../shared/reference/smmuv3-layouts.md):
  [S-*]  Arm IHI0070 SMMUv3 spec sections (IDR0 6.3.1, IDR1 6.3.2, GBPA 6.3.14, STRTAB_BASE 6.3.24,
         STRTAB_BASE_CFG 6.3.25, L1STD 5.1, STE 5.2, L1CD 5.3, CD 5.4)
  [LH]   Linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h (masks the kernel uses)
Addresses are declared with the spec's width ([55:x]); the kernel masks to [51:x]; the
``LINUX_*_MASK`` constants below are the kernel's view, used by the rule replays.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

__all__ = [
    "Field", "Layout", "SteConfig", "S1Fmt", "StrtabFmt", "genmask", "get", "linux_get", "LAYOUTS", "REGISTER_LAYOUTS",
    "IDR0", "IDR1", "IDR3", "IDR5", "CR0", "CR1", "CR2", "GBPA", "GERROR", "STRTAB_BASE", "STRTAB_BASE_CFG",
    "L1STD", "STE", "L1CD", "CD",
]


def genmask(hi: int, lo: int) -> int:
    """Linux GENMASK_ULL(hi, lo)."""
    return ((1 << (hi - lo + 1)) - 1) << lo


@dataclass(frozen=True)
class Field:
    name: str
    word: int  # 64-bit little-endian word of the structure (0 for registers)
    hi: int
    lo: int
    doc: str = ""
    #: an address field: its value keeps its bit positions (masked, not shifted)
    addr: bool = False
    #: value -> meaning, for the report
    enum: tuple[tuple[int, str], ...] = ()
    #: the highest address bit Linux keeps (its GENMASK_ULL(linux_hi, lo)); None: Linux reads all bits
    linux_hi: int | None = None

    @cached_property
    def width(self) -> int:
        return self.hi - self.lo + 1

    @cached_property
    def mask(self) -> int:
        return genmask(self.hi, self.lo)

    @cached_property
    def reserved(self) -> bool:
        return self.name.startswith("rsvd_")

    @property
    def linux_mask(self) -> int:
        """The mask the kernel applies to this field's word (its ``*_MASK`` macro)."""
        return genmask(self.hi if self.linux_hi is None else self.linux_hi, self.lo)

    @cached_property
    def _meanings(self) -> dict[int, str]:
        return dict(self.enum)

    def meaning(self, value: int) -> str | None:
        return self._meanings.get(value)


@dataclass(frozen=True)
class Layout:
    name: str
    size: int  # bytes: 4 or 8 for registers, 8 for descriptors, 64 for STE/CD
    fields: tuple[Field, ...]
    source: str

    @property
    def words(self) -> int:
        return max(1, self.size // 8)

    @cached_property
    def _by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    def field(self, name: str) -> Field:
        return self._by_name[name]

    def res0_mask(self, word: int = 0) -> int:
        """Bits of ``word`` that no field names (RES0 for software that writes it).

        >>> hex(L1STD.res0_mask())
        '0xff00000000000020'
        """
        m = 0
        for f in self.fields:
            if f.reserved and f.word == word:
                m |= f.mask
        return m


def F(name: str, word: int, hi: int, lo: int | None = None, doc: str = "", addr: bool = False, enum: dict[int, str] | None = None,
      linux_hi: int | None = None) -> Field:
    return Field(name, word, hi, hi if lo is None else lo, doc, addr, tuple(sorted((enum or {}).items())), linux_hi)


def _complete(name: str, size: int, fields: list[Field], source: str) -> Layout:
    """Add ``rsvd_w{word}_{hi}_{lo}`` fields for every uncovered bit; check no overlaps."""
    bits = min(size, 8) * 8
    out = list(fields)
    for w in range(max(1, size // 8)):
        used = [0] * bits
        for f in fields:
            if f.word != w:
                continue
            for b in range(f.lo, f.hi + 1):
                if used[b]:
                    raise AssertionError(f"{name}.{f.name} overlaps bit {b}")
                used[b] = 1
        b = 0
        while b < bits:
            if used[b]:
                b += 1
                continue
            e = b
            while e + 1 < bits and not used[e + 1]:
                e += 1
            out.append(Field(f"rsvd_w{w}_{e}_{b}", w, e, b, "RES0 / not decoded"))
            b = e + 1
    out.sort(key=lambda f: (f.word, f.lo))
    return Layout(name, size, tuple(out), source)


CACHE = {0: "NC", 1: "WB-RA", 2: "WT-RA", 3: "WB-noRA"}  # STE S1CIR/S1COR, [S-STE]
SHARE = {0: "NSH", 1: "reserved(NSH)", 2: "OSH", 3: "ISH"}
OAS = {0: "32-bit", 1: "36-bit", 2: "40-bit", 3: "42-bit", 4: "44-bit", 5: "48-bit", 6: "52-bit"}
OAS_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52, 7: 56}  # [S-IDR5], 7 = 56 in v3.3+

# ---------------------------------------------------------------------------------------------
# Registers (MMIO page 0) - offsets and fields [LH], meanings [S-IDR0] [S-IDR1] [S-GBPA]
# ---------------------------------------------------------------------------------------------
IDR0 = _complete("IDR0", 4, [
    F("S2P", 0, 0, doc="stage 2 supported"), F("S1P", 0, 1, doc="stage 1 supported"),
    F("TTF", 0, 3, 2, enum={0: "reserved", 1: "AArch32", 2: "AArch64", 3: "AArch32+AArch64"}),
    F("COHACC", 0, 4, doc="coherent access to tables and queues"), F("BTM", 0, 5),
    F("HTTU", 0, 7, 6, enum={0: "none", 1: "AF", 2: "AF+dirty", 3: "AF+dirty+table AF"}),
    F("DORMHINT", 0, 8), F("HYP", 0, 9), F("ATS", 0, 10), F("NS1ATS", 0, 11),
    F("ASID16", 0, 12, doc="16-bit ASIDs"), F("MSI", 0, 13), F("SEV", 0, 14), F("ATOS", 0, 15),
    F("PRI", 0, 16), F("VMW", 0, 17), F("VMID16", 0, 18, doc="16-bit VMIDs"),
    F("CD2L", 0, 19, doc="2-level CD tables"), F("VATOS", 0, 20),
    F("TTENDIAN", 0, 22, 21, enum={0: "mixed", 1: "reserved", 2: "little", 3: "big"}),
    F("ATSRECERR", 0, 23),
    F("STALL_MODEL", 0, 25, 24, enum={0: "stall+terminate", 1: "terminate only", 2: "stall forced", 3: "reserved"}),
    F("TERM_MODEL", 0, 26),
    F("ST_LEVEL", 0, 28, 27, enum={0: "linear only", 1: "2-level supported", 2: "reserved", 3: "reserved"}),
    F("RME_IMPL", 0, 30),
], "[S-IDR0] 6.3.1, [LH] ARM_SMMU_IDR0")

IDR1 = _complete("IDR1", 4, [
    F("SIDSIZE", 0, 5, 0, doc="StreamID bits"), F("SSIDSIZE", 0, 10, 6, doc="SubstreamID bits"),
    F("PRIQS", 0, 15, 11), F("EVTQS", 0, 20, 16), F("CMDQS", 0, 25, 21),
    F("ATTR_PERMS_OVR", 0, 26), F("ATTR_TYPES_OVR", 0, 27), F("REL", 0, 28),
    F("QUEUES_PRESET", 0, 29), F("TABLES_PRESET", 0, 30), F("ECMDQ", 0, 31),
], "[S-IDR1] 6.3.2, [LH] ARM_SMMU_IDR1")

IDR3 = _complete("IDR3", 4, [
    F("HAD", 0, 2), F("PBHA", 0, 3), F("XNX", 0, 4), F("PPS", 0, 5), F("MPAM", 0, 7), F("FWB", 0, 8),
    F("STT", 0, 9), F("RIL", 0, 10), F("BBML", 0, 12, 11), F("E0PD", 0, 13), F("PTWNNC", 0, 14), F("DPT", 0, 15),
], "[LH] IDR3_RIL, QEMU smmuv3-internal.h")

IDR5 = _complete("IDR5", 4, [
    F("OAS", 0, 2, 0, enum=OAS), F("GRAN4K", 0, 4), F("GRAN16K", 0, 5), F("GRAN64K", 0, 6),
    F("VAX", 0, 11, 10, enum={0: "48-bit VA", 1: "52-bit VA"}), F("STALL_MAX", 0, 31, 16),
], "[LH] ARM_SMMU_IDR5")

CR0 = _complete("CR0", 4, [
    F("SMMUEN", 0, 0), F("PRIQEN", 0, 1), F("EVTQEN", 0, 2), F("CMDQEN", 0, 3), F("ATSCHK", 0, 4),
], "[LH] ARM_SMMU_CR0")

CR1 = _complete("CR1", 4, [
    F("QUEUE_IC", 0, 1, 0, enum={0: "NC", 1: "WB", 2: "WT"}), F("QUEUE_OC", 0, 3, 2, enum={0: "NC", 1: "WB", 2: "WT"}),
    F("QUEUE_SH", 0, 5, 4, enum=SHARE), F("TABLE_IC", 0, 7, 6, enum={0: "NC", 1: "WB", 2: "WT"}),
    F("TABLE_OC", 0, 9, 8, enum={0: "NC", 1: "WB", 2: "WT"}), F("TABLE_SH", 0, 11, 10, enum=SHARE),
], "[LH] ARM_SMMU_CR1")

CR2 = _complete("CR2", 4, [F("E2H", 0, 0), F("RECINVSID", 0, 1), F("PTM", 0, 2)], "[LH] ARM_SMMU_CR2")

GBPA = _complete("GBPA", 4, [
    F("MEMATTR", 0, 3, 0), F("MTCFG", 0, 4), F("ALLOCCFG", 0, 11, 8), F("SHCFG", 0, 13, 12),
    F("PRIVCFG", 0, 17, 16), F("INSTCFG", 0, 19, 18), F("ABORT", 0, 20, doc="abort all traffic when SMMUEN=0"),
    F("UPDATE", 0, 31),
], "[S-GBPA] 6.3.14")

GERROR = _complete("GERROR", 4, [
    F("CMDQ_ERR", 0, 0), F("EVTQ_ABT_ERR", 0, 2), F("PRIQ_ABT_ERR", 0, 3), F("MSI_CMDQ_ABT_ERR", 0, 4),
    F("MSI_EVTQ_ABT_ERR", 0, 5), F("MSI_PRIQ_ABT_ERR", 0, 6), F("MSI_GERROR_ABT_ERR", 0, 7),
    F("SFM_ERR", 0, 8, doc="Service Failure Mode"),
], "[LH] ARM_SMMU_GERROR")

STRTAB_BASE = _complete("STRTAB_BASE", 8, [
    F("ADDR", 0, 55, 6, addr=True, doc="table base (spec [55:6]; Linux masks [51:6])"),
    F("RA", 0, 62, doc="read-allocate hint"),
], "[S-SB] 6.3.24, [LH] STRTAB_BASE_RA / STRTAB_BASE_ADDR_MASK")

STRTAB_BASE_CFG = _complete("STRTAB_BASE_CFG", 4, [
    F("LOG2SIZE", 0, 5, 0, doc="log2(number of StreamIDs)"),
    F("SPLIT", 0, 10, 6, doc="L2 tables cover 2^SPLIT StreamIDs (6, 8, 10 valid; others behave as 6)"),
    F("FMT", 0, 17, 16, enum={0: "linear", 1: "2-level", 2: "reserved (behaves as linear)", 3: "reserved (behaves as linear)"}),
], "[S-SBC] 6.3.25, [LH] STRTAB_BASE_CFG_*")

#: MMIO offsets in page 0 [LH]
REGISTER_OFFSETS = {
    "idr0": (0x000, 4), "idr1": (0x004, 4), "idr2": (0x008, 4), "idr3": (0x00C, 4), "idr4": (0x010, 4),
    "idr5": (0x014, 4), "iidr": (0x018, 4), "aidr": (0x01C, 4), "cr0": (0x020, 4), "cr0ack": (0x024, 4),
    "cr1": (0x028, 4), "cr2": (0x02C, 4), "statusr": (0x040, 4), "gbpa": (0x044, 4), "irq_ctrl": (0x050, 4),
    "irq_ctrlack": (0x054, 4), "gerror": (0x060, 4), "gerrorn": (0x064, 4), "strtab_base": (0x080, 8),
    "strtab_base_cfg": (0x088, 4), "cmdq_base": (0x090, 8), "cmdq_prod": (0x098, 4), "cmdq_cons": (0x09C, 4),
    "eventq_base": (0x0A0, 8),
}
REGISTER_LAYOUTS = {
    "idr0": IDR0, "idr1": IDR1, "idr3": IDR3, "idr5": IDR5, "cr0": CR0, "cr0ack": CR0, "cr1": CR1, "cr2": CR2,
    "gbpa": GBPA, "gerror": GERROR, "gerrorn": GERROR, "strtab_base": STRTAB_BASE, "strtab_base_cfg": STRTAB_BASE_CFG,
}

# ---------------------------------------------------------------------------------------------
# Stream table [S-L1STD] 5.1, [S-STE] 5.2
# ---------------------------------------------------------------------------------------------
L1STD = _complete("L1STD", 8, [
    F("SPAN", 0, 4, 0, doc="0 invalid; 1..11: L2 holds 2^(SPAN-1) STEs; 12..31 reserved (behave as 0)"),
    F("L2PTR", 0, 55, 6, addr=True, linux_hi=51, doc="L2 table address (spec [55:6]; Linux masks [51:6])"),
], "[S-L1STD] 5.1, [LH] STRTAB_L1_DESC_*")



class SteConfig(IntEnum):
    """STE.Config [S-STE] 5.2 (Linux STRTAB_STE_0_CFG_*); 1-3 are reserved and behave as abort."""

    ABORT = 0
    RESERVED_1 = 1
    RESERVED_2 = 2
    RESERVED_3 = 3
    BYPASS = 4
    S1 = 5  # stage 1 translate, stage 2 bypass
    S2 = 6  # stage 1 bypass, stage 2 translate
    NESTED = 7  # both stages

    @property
    def label(self) -> str:
        """The report's name: abort, reserved, bypass, s1, s2, nested.

        >>> SteConfig(5).label, SteConfig(2).label
        ('s1', 'reserved')
        """
        return "reserved" if 1 <= self <= 3 else self.name.lower()

    @property
    def stage1(self) -> bool:
        """Config[0] and Config[2] set: stage 1 translates (s1, nested)."""
        return self in (SteConfig.S1, SteConfig.NESTED)

    @property
    def stage2(self) -> bool:
        """Config[1] and Config[2] set: stage 2 translates (s2, nested)."""
        return self in (SteConfig.S2, SteConfig.NESTED)


class S1Fmt(IntEnum):
    """STE.S1Fmt [S-STE] 5.2: the CD table's shape (3 is reserved and behaves as linear)."""

    LINEAR = 0
    L2_4K = 1  # 2-level, 4 KiB leaf tables (64 CDs)
    L2_64K = 2  # 2-level, 64 KiB leaf tables (1024 CDs); the only 2-level form Linux writes
    RESERVED = 3


class StrtabFmt(IntEnum):
    """STRTAB_BASE_CFG.FMT [S-SBC] 6.3.25; 2 and 3 are reserved."""

    LINEAR = 0
    TWO_LEVEL = 1


STE = _complete("STE", 64, [
    # word 0
    F("V", 0, 0, doc="valid"),
    F("CONFIG", 0, 3, 1, enum={0: "abort", 1: "reserved (behaves as abort)", 2: "reserved (behaves as abort)",
                                3: "reserved (behaves as abort)", 4: "bypass", 5: "stage 1", 6: "stage 2", 7: "stage 1 + stage 2"}),
    F("S1FMT", 0, 5, 4, enum={0: "linear", 1: "2-level 4K leaves", 2: "2-level 64K leaves", 3: "reserved (linear)"}),
    F("S1CONTEXTPTR", 0, 55, 6, addr=True, linux_hi=51, doc="CD table address (Linux masks [51:6])"),
    F("S1CDMAX", 0, 63, 59, doc="log2(number of CDs)"),
    # word 1
    F("S1DSS", 1, 1, 0, enum={0: "terminate", 1: "bypass", 2: "substream 0", 3: "reserved"}),
    F("S1CIR", 1, 3, 2, enum=CACHE), F("S1COR", 1, 5, 4, enum=CACHE), F("S1CSH", 1, 7, 6, enum=SHARE),
    F("S2HWU", 1, 11, 8), F("DRE", 1, 12), F("CONT", 1, 16, 13), F("DCP", 1, 17), F("PPAR", 1, 18), F("MEV", 1, 19),
    F("SW_RESERVED", 1, 23, 20), F("S1PIE", 1, 24), F("S2FWB", 1, 25), F("S1MPAM", 1, 26), F("S1STALLD", 1, 27),
    F("EATS", 1, 29, 28, enum={0: "abort", 1: "translate", 2: "S1 check", 3: "reserved"}),
    F("STRW", 1, 31, 30, enum={0: "NS-EL1", 1: "reserved", 2: "EL2", 3: "reserved"}),
    F("MEMATTR", 1, 35, 32), F("MTCFG", 1, 36), F("ALLOCCFG", 1, 40, 37),
    F("SHCFG", 1, 45, 44, enum={0: "NSH", 1: "incoming", 2: "OSH", 3: "ISH"}), F("NSCFG", 1, 47, 46),
    F("PRIVCFG", 1, 49, 48), F("INSTCFG", 1, 51, 50), F("IMPDEF1", 1, 63, 52),
    # word 2
    F("S2VMID", 2, 15, 0), F("IMPDEF2", 2, 31, 16), F("S2T0SZ", 2, 37, 32), F("S2SL0", 2, 39, 38),
    F("S2IR0", 2, 41, 40), F("S2OR0", 2, 43, 42), F("S2SH0", 2, 45, 44),
    F("S2TG", 2, 47, 46, enum={0: "4K", 1: "64K", 2: "16K", 3: "reserved"}), F("S2PS", 2, 50, 48, enum=OAS),
    F("S2AA64", 2, 51), F("S2ENDI", 2, 52), F("S2AFFD", 2, 53), F("S2PTW", 2, 54), F("S2HD", 2, 55),
    F("S2HA", 2, 56), F("S2S", 2, 57), F("S2R", 2, 58), F("S2HAFT", 2, 59), F("S2PIE", 2, 60), F("S2POE", 2, 61),
    F("DPT_VMATCH", 2, 63, 62),
    # word 3
    F("S2NSW", 3, 0), F("S2NSA", 3, 1), F("S2SL0_2", 3, 2), F("S2DS", 3, 3),
    F("S2TTB", 3, 55, 4, addr=True, linux_hi=51, doc="stage-2 table (Linux masks [51:4])"), F("S2SKL", 3, 62, 61),
    # word 4
    F("IMPDEF4", 4, 15, 0), F("PARTID", 4, 31, 16), F("S_S2T0SZ", 4, 37, 32), F("S_S2SL0", 4, 39, 38),
    F("S_S2TG", 4, 47, 46), F("MECID", 4, 63, 48),
    # word 5
    F("PMG", 5, 7, 0), F("MPAM_NS", 5, 8), F("ASSUREDONLY", 5, 9), F("TL0", 5, 10), F("TL1", 5, 11),
    F("VMSPTR", 5, 55, 12, addr=True),
    # word 6
    F("S2SW", 6, 0), F("S2SA", 6, 1), F("S_S2SL0_2", 6, 2), F("S_S2TTB", 6, 55, 4, addr=True), F("S_S2SKL", 6, 62, 61),
    # word 7
    F("S2POI", 7, 63, 0),
], "[S-STE] 5.2, [LH] STRTAB_STE_*")

# ---------------------------------------------------------------------------------------------
# Context descriptors [S-L1CD] 5.3, [S-CD] 5.4
# ---------------------------------------------------------------------------------------------
L1CD = _complete("L1CD", 8, [
    F("V", 0, 0), F("L2PTR", 0, 55, 12, addr=True, linux_hi=51, doc="leaf CD table (Linux masks [51:12])"),
], "[S-L1CD] 5.3, [LH] CTXDESC_L1_DESC_*")

CD = _complete("CD", 64, [
    F("T0SZ", 0, 5, 0), F("TG0", 0, 7, 6, enum={0: "4K", 1: "64K", 2: "16K", 3: "reserved"}),
    F("IR0", 0, 9, 8, enum=CACHE), F("OR0", 0, 11, 10, enum=CACHE), F("SH0", 0, 13, 12, enum=SHARE),
    F("EPD0", 0, 14), F("ENDI", 0, 15), F("T1SZ", 0, 21, 16),
    F("TG1", 0, 23, 22, enum={0: "reserved", 1: "16K", 2: "4K", 3: "64K"}),
    F("IR1", 0, 25, 24), F("OR1", 0, 27, 26), F("SH1", 0, 29, 28), F("EPD1", 0, 30), F("V", 0, 31),
    F("IPS", 0, 34, 32, enum=OAS), F("AFFD", 0, 35), F("WXN", 0, 36), F("UWXN", 0, 37), F("TBI0", 0, 38),
    F("TBI1", 0, 39), F("PAN", 0, 40), F("AA64", 0, 41), F("HD", 0, 42), F("HA", 0, 43), F("S", 0, 44),
    F("R", 0, 45), F("A", 0, 46), F("ASET", 0, 47), F("ASID", 0, 63, 48),
    F("NSCFG0", 1, 0), F("HAD0", 1, 1), F("E0PD0", 1, 2), F("HAFT", 1, 3),
    F("TTB0", 1, 55, 4, addr=True, linux_hi=51, doc="Linux masks [51:4]"), F("HWU0", 1, 63, 56),
    F("NSCFG1", 2, 0), F("HAD1", 2, 1), F("E0PD1", 2, 2), F("AIE", 2, 3), F("TTB1", 2, 55, 4, addr=True),
    F("DS", 2, 58), F("PIE", 2, 59), F("HWU1", 2, 63, 60),
    F("MAIR0", 3, 31, 0), F("MAIR1", 3, 63, 32), F("AMAIR0", 4, 31, 0), F("AMAIR1", 4, 63, 32),
    F("IMPDEF5", 5, 31, 0), F("PARTID", 5, 47, 32), F("PMG", 5, 55, 48),
], "[S-CD] 5.4, [LH] CTXDESC_CD_*")

# ---------------------------------------------------------------------------------------------
# The kernel's own view [LH] (used by rules/, which replay the kernel's C)
# ---------------------------------------------------------------------------------------------
# Derived from the declared fields (the kernel's own macro named in each comment).
LINUX_STRTAB_BASE_ADDR_MASK = STRTAB_BASE.field("ADDR").linux_mask  # STRTAB_BASE_ADDR_MASK GENMASK_ULL(51, 6)
LINUX_L1_DESC_L2PTR_MASK = L1STD.field("L2PTR").linux_mask  # STRTAB_L1_DESC_L2PTR_MASK GENMASK_ULL(51, 6)
LINUX_L1_DESC_SPAN_MASK = L1STD.field("SPAN").linux_mask  # STRTAB_L1_DESC_SPAN GENMASK_ULL(4, 0)
LINUX_STE_S1CTXPTR_MASK = STE.field("S1CONTEXTPTR").linux_mask  # STRTAB_STE_0_S1CTXPTR_MASK GENMASK_ULL(51, 6)
LINUX_STE_VMID_MASK = STE.field("S2VMID").linux_mask  # STRTAB_STE_2_S2VMID GENMASK_ULL(15, 0)
LINUX_STE_S2TTB_MASK = STE.field("S2TTB").linux_mask  # STRTAB_STE_3_S2TTB_MASK GENMASK_ULL(51, 4)
LINUX_L1CD_L2PTR_MASK = L1CD.field("L2PTR").linux_mask  # CTXDESC_L1_DESC_L2PTR_MASK GENMASK_ULL(51, 12)
LINUX_CD_TTB0_MASK = CD.field("TTB0").linux_mask  # CTXDESC_CD_1_TTB0_MASK GENMASK_ULL(51, 4)
LINUX_CD_V = CD.field("V").mask  # CTXDESC_CD_0_V BIT(31)
LINUX_CD_ASID_SHIFT = CD.field("ASID").lo  # CTXDESC_CD_0_ASID GENMASK_ULL(63, 48)
STRTAB_SPLIT = 8  # [LH] STRTAB_SPLIT
STRTAB_NUM_L2_STES = 1 << STRTAB_SPLIT  # [LH]
STRTAB_MAX_L1_ENTRIES = 1 << 17  # [LH]
STRTAB_L2_BYTES = STRTAB_NUM_L2_STES * 64  # sizeof(struct arm_smmu_strtab_l2) = 16 KiB
STE_BYTES = 64  # STRTAB_STE_DWORDS * 8
CD_BYTES = 64  # CTXDESC_CD_DWORDS * 8
CTXDESC_L2_ENTRIES = 1024  # [LH]; sizeof(struct arm_smmu_cdtab_l2) = 64 KiB
STE_CFG_ABORT, STE_CFG_BYPASS, STE_CFG_S1, STE_CFG_S2, STE_CFG_NESTED = (
    SteConfig.ABORT, SteConfig.BYPASS, SteConfig.S1, SteConfig.S2, SteConfig.NESTED)  # [LH], [LH-n]
STE_S1FMT_LINEAR, STE_S1FMT_64K_L2 = S1Fmt.LINEAR, S1Fmt.L2_64K  # [LH] STRTAB_STE_0_S1FMT_*
STRTAB_MAX_SPAN = 11  # [S-L1STD] 5.1: Span 12..31 is reserved and behaves as 0
STRTAB_LEGAL_SPLITS = (6, 8, 10)  # [S-SBC] 6.3.25: other SPLIT values are reserved and behave as 6
LINEAR_MAX_LOG2SIZE = 25  # ilog2(STRTAB_MAX_L1_ENTRIES * STRTAB_NUM_L2_STES) [LH]: the kernel's linear cap
GERROR_SFM_ERR = 1 << 8  # [LH]
CR0_SMMUEN = 1 << 0  # [LH]

LAYOUTS = {lay.name: lay for lay in (IDR0, IDR1, IDR3, IDR5, CR0, CR1, CR2, GBPA, GERROR, STRTAB_BASE,
                                     STRTAB_BASE_CFG, L1STD, STE, L1CD, CD)}


def get(layout: Layout, value_words: list[int] | tuple[int, ...] | int, name: str) -> int:
    """One field from raw words (an int for one-word layouts).

    >>> get(STRTAB_BASE_CFG, 0x10210, "SPLIT")
    8
    """
    f = layout.field(name)
    word = value_words if isinstance(value_words, int) else value_words[f.word]
    v = (word >> f.lo) & ((1 << f.width) - 1)
    return v << f.lo if f.addr else v


def linux_get(layout: Layout, value_words: list[int] | tuple[int, ...] | int, name: str) -> int:
    """A field as the kernel reads it: masked with its ``*_MASK`` macro (addresses keep [51:lo]).

    >>> hex(linux_get(L1STD, 0x00f000007ac60009, "L2PTR"))
    '0x7ac60000'
    """
    f = layout.field(name)
    word = value_words if isinstance(value_words, int) else value_words[f.word]
    v = word & f.linux_mask
    return v if f.addr else v >> f.lo

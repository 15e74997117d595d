"""States of the decoded tables, as types (their ``value`` is the report's spelling).

>>> TableFormat.TWO_LEVEL.value, L1Status.VALID == "valid"
('2lvl', True)
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TableFormat", "L1Status", "L2State", "L1CdStatus"]


class TableFormat(str, Enum):
    """STRTAB_BASE_CFG.FMT as the report names it."""

    LINEAR = "linear"
    TWO_LEVEL = "2lvl"
    INVALID = "invalid"  # FMT 2/3: reserved; the kernel rejects it, the SMMU walks it as linear


class L1Status(str, Enum):
    """An L1 stream-table descriptor as the hardware sees it [S-L1STD] 5.1/5.1.1."""

    UNUSED = "unused"  # Span 0
    RESERVED_SPAN = "reserved-span"  # Span 12..31: behaves as 0
    SPAN_OUT_OF_BOUNDS = "span-out-of-bounds"  # Span - 1 > SPLIT
    NULL_L2PTR = "null-l2ptr"
    MISALIGNED_L2PTR = "misaligned-l2ptr"
    VALID = "valid"
    MISSING = "missing"  # the descriptor is not in the dump

    @property
    def points(self) -> bool:
        """The SMMU follows its L2Ptr (a valid span), whether or not the pointer is sane."""
        return self in (L1Status.VALID, L1Status.MISALIGNED_L2PTR, L1Status.NULL_L2PTR)


class L2State(str, Enum):
    """How much of an L2 table the dump holds."""

    PRESENT = "present"
    PARTIAL = "partial"
    MISSING = "missing"
    NOT_WALKED = "not walked"  # the walk's STE budget ran out
    NA = "n/a"  # no L2 table behind this descriptor


class L1CdStatus(str, Enum):
    """An L1 context-descriptor [S-L1CD] 5.3."""

    VALID = "valid"
    INVALID = "invalid"  # V=0
    NULL_L2PTR = "null-l2ptr"
    MISALIGNED_L2PTR = "misaligned-l2ptr"
    MISSING = "missing"

"""The ACPI IORT table (Arm DEN0049): where the SMMUv3s are, whether firmware calls them coherent,
and how PCI requester IDs map to StreamIDs.  Validated before use: signature, length, checksum,
node bounds; mappings followed one level, never in loops.

Layouts as Construct declarations (DEN0049 E.e, table 3 header, 4 node header, 5 ID mapping, 13 SMMUv3
node, 17 root complex).  Requester ID to StreamID as Linux's ``iort_id_map()`` does it: an input ID
``rid`` is in a mapping when ``input_base <= rid <= input_base + id_count`` (``id_count`` is "number of
IDs minus one").

>>> raw = bytes.fromhex("494f5254") + (36).to_bytes(4, "little") + bytes(28)
>>> parse(raw[:36] + bytes(12)).nodes
Traceback (most recent call last):
...
smmu_forensics.discover.iort.IortError: IORT length 36 is shorter than its 48-byte header
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

__all__ = ["Iort", "IortSmmu", "IortRc", "IdMapping", "parse", "IortError"]

AcpiHeader = Struct("signature" / Bytes(4), "length" / Int32ul, "revision" / Int8ul, "checksum" / Int8ul,
                    "oem_id" / Bytes(6), "oem_table_id" / Bytes(8), "oem_revision" / Int32ul, "creator_id" / Bytes(4),
                    "creator_revision" / Int32ul)
IortHeader = Struct("acpi" / AcpiHeader, "num_nodes" / Int32ul, "node_offset" / Int32ul, "reserved" / Int32ul)
NodeHeader = Struct("type" / Int8ul, "length" / Int16ul, "revision" / Int8ul, "identifier" / Int32ul,
                    "num_id_mappings" / Int32ul, "id_mapping_offset" / Int32ul)
IdMappingS = Struct("input_base" / Int32ul, "id_count" / Int32ul, "output_base" / Int32ul, "output_reference" / Int32ul,
                    "flags" / Int32ul)
Smmuv3Data = Struct("base_address" / Int64ul, "flags" / Int32ul, "reserved" / Int32ul, "vatos_address" / Int64ul,
                    "model" / Int32ul)
RootComplexData = Struct("cache_coherent" / Int32ul, "alloc_hints" / Int8ul, "reserved" / Int16ul, "mem_access_flags" / Int8ul,
                         "ats_attribute" / Int32ul, "pci_segment" / Int32ul)
NODE_SMMUV3, NODE_ROOT_COMPLEX = 4, 2
SMMUV3_COHACC_OVERRIDE = 1 << 0  # DEN0049 table 13, Flags bit 0
MAX_NODES = 4096
MAX_MAPPINGS = 4096


class IortError(ValueError):
    """The bytes are not a valid IORT (one line: why)."""


@dataclass(frozen=True)
class IdMapping:
    input_base: int
    id_count: int
    output_base: int
    output_reference: int

    def map(self, rid: int) -> int | None:
        if self.input_base <= rid <= self.input_base + self.id_count:
            return self.output_base + rid - self.input_base
        return None


@dataclass(frozen=True)
class IortSmmu:
    offset: int  # the node's offset in the table (what mappings refer to)
    base: int
    coherent: bool  # COHACC override: firmware says table walks are coherent


@dataclass(frozen=True)
class IortRc:
    segment: int
    mappings: tuple[IdMapping, ...]


@dataclass
class Iort:
    smmus: list[IortSmmu] = field(default_factory=list)
    root_complexes: list[IortRc] = field(default_factory=list)

    def stream_id(self, segment: int, rid: int) -> tuple[IortSmmu, int] | None:
        """The SMMU and StreamID a PCI requester ID reaches through its root complex's mappings."""
        by_off = {s.offset: s for s in self.smmus}
        for rc in self.root_complexes:
            if rc.segment != segment:
                continue
            for m in rc.mappings:
                out = m.map(rid)
                if out is not None and m.output_reference in by_off:
                    return by_off[m.output_reference], out
        return None


def parse(raw: bytes) -> Iort:
    """Parse and validate an IORT table."""
    if len(raw) < IortHeader.sizeof() or raw[:4] != b"IORT":
        raise IortError("not an IORT table (signature)")
    h = IortHeader.parse(raw)
    length = h.acpi.length
    if length < IortHeader.sizeof():
        raise IortError(f"IORT length {length} is shorter than its {IortHeader.sizeof()}-byte header")
    if length > len(raw):
        raise IortError(f"IORT length {length} runs past the {len(raw)} bytes read")
    raw = raw[:length]
    if sum(raw) & 0xFF:
        raise IortError("IORT checksum does not add up to 0")
    if h.num_nodes > MAX_NODES:
        raise IortError(f"IORT claims {h.num_nodes} nodes")
    out = Iort()
    off = h.node_offset
    for _ in range(h.num_nodes):
        if off + NodeHeader.sizeof() > length:
            raise IortError(f"IORT node at {off:#x} runs past the table")
        n = NodeHeader.parse(raw[off:])
        if n.length < NodeHeader.sizeof() or off + n.length > length:
            raise IortError(f"IORT node at {off:#x} has a bad length {n.length}")
        body = raw[off + NodeHeader.sizeof() : off + n.length]
        if n.type == NODE_SMMUV3 and len(body) >= Smmuv3Data.sizeof():
            d = Smmuv3Data.parse(body)
            out.smmus.append(IortSmmu(off, d.base_address, bool(d.flags & SMMUV3_COHACC_OVERRIDE)))
        elif n.type == NODE_ROOT_COMPLEX and len(body) >= RootComplexData.sizeof():
            d = RootComplexData.parse(body)
            out.root_complexes.append(IortRc(d.pci_segment, tuple(_mappings(raw, off, n))))
        off += n.length
    return out


def _mappings(raw: bytes, off: int, n: Any) -> list[IdMapping]:
    count = n.num_id_mappings
    start = off + n.id_mapping_offset
    if count > MAX_MAPPINGS or start + count * IdMappingS.sizeof() > off + n.length:
        raise IortError(f"IORT node at {off:#x}: {count} ID mappings do not fit the node")
    return [IdMapping(m.input_base, m.id_count, m.output_base, m.output_reference)
            for m in (IdMappingS.parse(raw[start + 20 * i :]) for i in range(count))]

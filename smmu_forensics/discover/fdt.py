"""The flattened device tree the kernel booted with (arm64 keeps it in RAM), read defensively.

Format: Devicetree Specification v0.4, chapter 5 (header: magic 0xd00dfeed, totalsize,
off_dt_struct, off_dt_strings, off_mem_rsvmap, version, last_comp_version, boot_cpuid_phys,
size_dt_strings, size_dt_struct, all big-endian; structure tokens FDT_BEGIN_NODE 1, FDT_END_NODE 2,
FDT_PROP 3, FDT_NOP 4, FDT_END 9).  Bounded: a blob of at most MAX_FDT bytes, MAX_NODES nodes, a
depth of MAX_DEPTH; any inconsistency ends the walk with an :class:`FdtError`.  Hand-written rather
than a PyPI parser: the PyPI ``fdt`` package (last release 2022) was not written for hostile
input, and this needs 80 lines.

Bindings used: iommu/arm,smmu-v3.yaml (``compatible = "arm,smmu-v3"``, ``reg``, ``dma-coherent``,
``phandle``), pci/pci-iommu.txt (``iommu-map = <rid-base &iommu iommu-base length>``), and
iommu/iommu.txt (``iommus = <&iommu id>``).

>>> parse(b"\\xd0\\x0d\\xfe\\xed" + bytes(36))
Traceback (most recent call last):
...
smmu_forensics.discover.fdt.FdtError: FDT totalsize 0 is outside [40, 16777216]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["FdtNode", "FdtSmmu", "DeviceTree", "parse", "FdtError", "MAGIC"]

MAGIC = 0xD00DFEED
MAX_FDT = 16 << 20
MAX_NODES = 1 << 16
MAX_DEPTH = 32
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9


class FdtError(ValueError):
    """The blob is not a device tree this reader trusts (one line: why)."""


@dataclass
class FdtNode:
    path: str
    props: dict[str, bytes] = field(default_factory=dict)
    parent: FdtNode | None = None

    def cells(self, name: str) -> list[int]:
        v = self.props.get(name, b"")
        return list(struct.unpack(f">{len(v) // 4}I", v[: len(v) // 4 * 4]))

    def strings(self, name: str) -> list[str]:
        return [s.decode("ascii", "replace") for s in self.props.get(name, b"").split(b"\0") if s]

    def address_cells(self) -> int:
        p = self.parent
        return (p.cells("#address-cells") or [2])[0] if p else 2


@dataclass(frozen=True)
class FdtSmmu:
    path: str
    base: int | None
    coherent: bool
    phandle: int | None


@dataclass
class DeviceTree:
    nodes: list[FdtNode]

    def smmus(self) -> list[FdtSmmu]:
        out = []
        for n in self.nodes:
            if "arm,smmu-v3" in n.strings("compatible"):
                reg, ac = n.cells("reg"), n.address_cells()
                base = sum(c << (32 * (ac - 1 - i)) for i, c in enumerate(reg[:ac])) if len(reg) >= ac else None
                ph = n.cells("phandle") or n.cells("linux,phandle")
                out.append(FdtSmmu(n.path, base, "dma-coherent" in n.props, ph[0] if ph else None))
        return out

    def iommu_maps(self, phandle: int) -> list[tuple[str, int, int, int]]:
        """(host bridge path, rid_base, sid_base, length) of every ``iommu-map`` entry aimed at ``phandle``."""
        out = []
        for n in self.nodes:
            c = n.cells("iommu-map")
            for i in range(0, len(c) - 3, 4):
                if c[i + 1] == phandle:
                    out.append((n.path, c[i], c[i + 2], c[i + 3]))
        return out

    def iommus(self, phandle: int) -> list[tuple[str, int]]:
        """(device path, StreamID) of platform devices with ``iommus = <&smmu SID>``."""
        out = []
        for n in self.nodes:
            c = n.cells("iommus")
            for i in range(0, len(c) - 1, 2):
                if c[i] == phandle:
                    out.append((n.path, c[i + 1]))
        return out


def parse(raw: bytes) -> DeviceTree:
    if len(raw) < 40 or struct.unpack_from(">I", raw)[0] != MAGIC:
        raise FdtError("not a flattened device tree (magic)")
    total, off_struct, off_strings, _rsv, version, _last, _cpu, size_strings, size_struct = struct.unpack_from(">9I", raw, 4)
    if not 40 <= total <= MAX_FDT:
        raise FdtError(f"FDT totalsize {total} is outside [40, {MAX_FDT}]")
    if total > len(raw) or off_struct + size_struct > total or off_strings + size_strings > total or version < 16:
        raise FdtError(f"FDT header does not add up (size {total}, struct {off_struct}+{size_struct}, "
                       f"strings {off_strings}+{size_strings}, version {version})")
    strings = raw[off_strings : off_strings + size_strings]
    return DeviceTree(_walk(raw[off_struct : off_struct + size_struct], strings))


def _walk(blk: bytes, strings: bytes) -> list[FdtNode]:
    nodes: list[FdtNode] = []
    stack: list[FdtNode] = []
    pos = 0
    while pos + 4 <= len(blk):
        (tok,) = struct.unpack_from(">I", blk, pos)
        pos += 4
        if tok == FDT_BEGIN_NODE:
            end = blk.find(b"\0", pos)
            if end < 0 or len(stack) >= MAX_DEPTH or len(nodes) >= MAX_NODES:
                raise FdtError("FDT node name unterminated, too deep or too many nodes")
            name = blk[pos:end].decode("ascii", "replace")
            parent = stack[-1] if stack else None
            node = FdtNode((parent.path.rstrip("/") + "/" + name) if parent else "/", parent=parent)
            nodes.append(node)
            stack.append(node)
            pos = (end + 4) & ~3
        elif tok == FDT_END_NODE:
            if not stack:
                raise FdtError("FDT closes a node it never opened")
            stack.pop()
        elif tok == FDT_PROP:
            if pos + 8 > len(blk) or not stack:
                raise FdtError("FDT property outside a node or cut short")
            ln, nameoff = struct.unpack_from(">II", blk, pos)
            pos += 8
            end = strings.find(b"\0", nameoff)
            if pos + ln > len(blk) or end < 0:
                raise FdtError("FDT property runs past the structure block or names no string")
            stack[-1].props[strings[nameoff:end].decode("ascii", "replace")] = blk[pos : pos + ln]
            pos = (pos + ln + 3) & ~3
        elif tok == FDT_NOP:
            continue
        elif tok == FDT_END:
            break
        else:
            raise FdtError(f"FDT token {tok:#x} at {pos - 4:#x} is not one of the spec's")
    return nodes

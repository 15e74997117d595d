"""Every SMMU the arm-smmu-v3 driver registered, by walking ``iommu_device_list`` (needs symbols).

drivers/iommu/iommu.c keeps ``static LIST_HEAD(iommu_device_list)`` of ``struct iommu_device
{ struct list_head list; const struct iommu_ops *ops; struct fwnode_handle *fwnode; struct device
*dev; ... }`` (6.1 and 6.12), and ``struct arm_smmu_device`` embeds its ``iommu`` right after
``strtab_cfg`` (arm-smmu-v3.h): so the list node minus ``sizeof(strtab_cfg)`` is the driver's copy
(48 bytes in 5.x-6.11, 32 in 6.12's union), decoded and checked as :mod:`.driver` does, and
``dev``'s first word (``kobj.name``, struct device begins with its kobject) is the SMMU's device
name as the log prints it.  With ``arm_smmu_ops`` known, nodes of other IOMMU drivers are skipped.
Bounded: MAX_NODES nodes, a loop ends the walk.
"""

from __future__ import annotations

from dataclasses import dataclass

from smmu_forensics.discover import driver
from smmu_forensics.discover.kva import KernelVA, TranslationError
from smmu_forensics.discover.symbols import Symbols
from smmu_forensics.dumps.base import MemoryMissing, PhysicalMemory
from smmu_forensics.smmu.recorded import DriverCopy

__all__ = ["Registered", "walk"]

MAX_NODES = 256
CFG_BYTES_61 = 48  # struct arm_smmu_strtab_cfg, 5.x-6.11: strtab, strtab_dma, l1_desc, num_l1_ents, strtab_base, strtab_base_cfg
CFG_BYTES_612 = 32  # 6.12: the union's larger member, l2 = { l1tab, l2ptrs, l1_dma, num_l1_ents }
OPS_OFFSET = 16  # iommu_device.ops: after list (next, prev)
DEV_OFFSET = 32  # iommu_device.dev: after list (16), ops, fwnode


@dataclass(frozen=True)
class Registered:
    node: int  # physical address of the iommu_device
    name: str  # the SMMU's device name (kobj.name)
    copy: DriverCopy | None


def _u64(mem: PhysicalMemory, pa: int) -> int:
    return int.from_bytes(mem.read(pa, 8), "little")


def walk(mem: PhysicalMemory, syms: Symbols) -> tuple[list[Registered], list[str]]:
    """(the SMMUv3s on ``iommu_device_list``, notes on what could not be followed)."""
    head_va = syms.get("iommu_device_list")
    if head_va is None:
        return [], [f"{syms.source}: no iommu_device_list (data symbols need CONFIG_KALLSYMS_ALL, or System.map/vmlinux)"]
    ops = syms.get("arm_smmu_ops")
    out: list[Registered] = []
    notes: list[str] = []
    try:
        kva = KernelVA.from_vmcoreinfo(mem.vmcoreinfo())
        head = kva.pa(head_va)
        node_va = _u64(mem, head)
        seen = {head_va}
        while node_va not in seen and len(seen) <= MAX_NODES:
            seen.add(node_va)
            node = kva.resolve(mem, node_va)
            if ops is None or _u64(mem, node + OPS_OFFSET) == ops:
                out.append(_one(mem, kva, node))
            node_va = _u64(mem, node)
        if node_va != head_va:
            notes.append(f"iommu_device_list does not close after {len(seen) - 1} nodes: the walk stopped")
    except (TranslationError, MemoryMissing) as exc:
        notes.append(f"iommu_device_list walk stopped: {exc}")
    return out, notes


def _one(mem: PhysicalMemory, kva: KernelVA, node: int) -> Registered:
    name = ""
    try:
        dev = kva.resolve(mem, _u64(mem, node + DEV_OFFSET))
        raw = mem.read_partial(kva.pa(_u64(mem, dev)), 64).data
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    except (TranslationError, MemoryMissing):
        pass
    copy = driver.decode_61(mem, node - CFG_BYTES_61) or driver.decode_612(mem, node - CFG_BYTES_612)
    return Registered(node, name, copy)

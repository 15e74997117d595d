"""Find every SMMU of a dump and reconstruct its registers, each value with where it came from.

Sources, cheapest first: VMCOREINFO and the kernel log (each SMMU's device name, ``ias``/``oas`` and
the driver's feature word; the PCI devices and their drivers; the IORT table's physical address),
the firmware (IORT on ACPI machines), and the driver's own copy of the stream-table registers in
kernel memory (:mod:`.driver`).  What no dump records (CR0.SMMUEN, GERROR) is assumed healthy and
said so.  Nothing here judges; the result feeds the same pipeline as registers given by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smmu_forensics.discover.driver import scan
from smmu_forensics.discover.fdt import MAX_FDT, DeviceTree, FdtError
from smmu_forensics.discover.fdt import parse as parse_fdt
from smmu_forensics.discover.iort import Iort, IortError
from smmu_forensics.discover.iort import parse as parse_iort
from smmu_forensics.discover.printk import KernelLog, LogError, read_log
from smmu_forensics.discover.registered import walk
from smmu_forensics.discover.shape import TableCandidate
from smmu_forensics.discover.symbols import SymbolError, Symbols
from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.smmu.fields import STRTAB_SPLIT
from smmu_forensics.smmu.recorded import DriverCopy
from smmu_forensics.smmu.states import TableFormat

__all__ = ["Evidence", "FoundSmmu", "PciDevice", "Discovery", "discover", "FEATURES"]

#: the driver's ARM_SMMU_FEAT_* bits (arm-smmu-v3.h, 6.1; 6.12 adds bits 20-22), as the log prints them
FEATURES = {"2_LVL_STRTAB": 0, "2_LVL_CDTAB": 1, "TT_LE": 2, "TT_BE": 3, "PRI": 4, "ATS": 5, "SEV": 6, "MSI": 7,
            "COHERENCY": 8, "TRANS_S1": 9, "TRANS_S2": 10, "STALLS": 11, "HYP": 12, "STALL_FORCE": 13, "VAX": 14,
            "RANGE_INV": 15, "BTM": 16, "SVA": 17, "E2H": 18, "NESTING": 19}
SMMU_LINE = re.compile(r"^arm-smmu-v3 (?P<dev>\S+): ias (?P<ias>\d+)-bit, oas (?P<oas>\d+)-bit \(features 0x(?P<feat>[0-9a-f]+)\)")
IORT_LINE = re.compile(r"^ACPI: IORT 0x(?P<pa>[0-9A-Fa-f]{1,16}) (?P<len>[0-9A-Fa-f]{1,8}) ")
PCI_LINE = re.compile(r"^pci (?P<bdf>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): \[(?P<v>[0-9a-f]{4}):(?P<d>[0-9a-f]{4})\] "
                      r"type (?P<t>[0-9a-f]{2}) class 0x(?P<c>[0-9a-f]{6})")
GROUP_LINE = re.compile(r"^(?P<drv>\S+) (?P<bdf>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]): Adding to iommu group (?P<g>\d+)")
DT_NAME = re.compile(r"^(?P<base>[0-9a-f]+)\.\S+$")  # DT device names: unit address, then the node name
MAX_IORT = 1 << 16
MAX_UNNAMED = 8  # SMMUs made up from tables found by shape when the log names none


@dataclass(frozen=True)
class Evidence:
    what: str
    source: str
    addr: int | None = None


@dataclass(frozen=True)
class PciDevice:
    bdf: str
    vendor: int
    device: int
    cls: int
    driver: str = ""
    group: str = ""

    @property
    def rid(self) -> int:
        bus, devfn = self.bdf.split(":")[1:]
        dev, fn = devfn.split(".")
        return int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn, 16)

    @property
    def segment(self) -> int:
        return int(self.bdf.split(":")[0], 16)

    def label(self) -> str:
        return f"{self.bdf} [{self.vendor:04x}:{self.device:04x}]" + (f" {self.driver}" if self.driver else "")


@dataclass
class FoundSmmu:
    name: str
    base: int | None = None
    features: int | None = None
    ias: int | None = None
    oas: int | None = None
    coherent: bool | None = None
    copy: DriverCopy | None = None
    table: TableCandidate | None = None  # found by shape, when no driver copy names the table
    evidence: list[Evidence] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    devices: dict[int, list[str]] = field(default_factory=dict)  # StreamID -> device labels

    def feature(self, name: str) -> bool | None:
        return None if self.features is None else bool(self.features >> FEATURES[name] & 1)


@dataclass
class Discovery:
    smmus: list[FoundSmmu] = field(default_factory=list)
    devices: list[PciDevice] = field(default_factory=list)
    log: KernelLog | None = None
    iort: Iort | None = None
    iort_addr: int | None = None
    dt: DeviceTree | None = None
    dt_addr: int | None = None
    tables: list[TableCandidate] = field(default_factory=list)  # every table found by shape, best first
    notes: list[str] = field(default_factory=list)


def discover(mem: PhysicalMemory, syms: Symbols | None = None) -> Discovery:
    """Every SMMU the dump shows, its registers' sources, and the devices behind its StreamIDs.
    ``syms`` (System.map or vmlinux) lets the driver's list of SMMUs be walked; without it the
    kernel's kallsyms is tried when the log names several SMMUs (the tie then matters)."""
    d = Discovery()
    try:
        d.log = read_log(mem)
    except LogError as exc:
        d.notes.append(f"kernel log: {exc}")
    lines = [r.text for r in d.log.records] if d.log else []
    d.smmus = [_from_log(m) for m in map(SMMU_LINE.match, lines) if m]
    d.devices = _pci_devices(lines)
    d.iort = _iort(mem, lines, d)
    hits = scan(mem)
    copies = hits.copies
    d.tables, d.notes = hits.tables, d.notes + hits.notes
    d.dt, d.dt_addr = _device_tree(mem, hits.fdts, d)
    if not d.smmus and (copies or d.tables):
        n = len(copies) or max(1, min(MAX_UNNAMED, sum(t.score > 0 for t in d.tables)))
        d.smmus = [FoundSmmu(f"smmu{i}") for i in range(n)]
        d.notes.append("no SMMU named by the kernel log: " + (f"{len(copies)} driver register copies" if copies else
                       f"{n} table(s) found by shape") + " taken as the SMMUs")
    _registered(mem, d, syms)
    _tie(d, [c for c in copies if all(s.copy is None or s.copy.addr != c.addr for s in d.smmus)])
    _shapes(d)
    for s in d.smmus:
        _firmware(s, d)
        _assume(s)
        _names(s, d)
    return d


def _from_log(m: re.Match) -> FoundSmmu:
    s = FoundSmmu(m["dev"], features=int(m["feat"], 16), ias=int(m["ias"]), oas=int(m["oas"]))
    s.evidence.append(Evidence(f"kernel log: {m.group(0)}", "printk ring"))
    dt = DT_NAME.match(m["dev"])
    if dt:
        s.base = int(dt["base"], 16)
        s.evidence.append(Evidence(f"MMIO base {s.base:#x} from the device-tree device name {m['dev']}", "kernel log"))
    if s.features is not None:
        s.coherent = bool(s.features >> FEATURES["COHERENCY"] & 1)
        s.evidence.append(Evidence(f"coherent={s.coherent}: ARM_SMMU_FEAT_COHERENCY in features {s.features:#x} "
                                   "(the kernel's own reading of DT dma-coherent / IORT COHACC)", "kernel log"))
    return s


def _pci_devices(lines: list[str]) -> list[PciDevice]:
    found: dict[str, PciDevice] = {}
    drivers: dict[str, tuple[str, str]] = {}
    for t in lines:
        m = PCI_LINE.match(t)
        if m and m["bdf"] not in found:
            found[m["bdf"]] = PciDevice(m["bdf"], int(m["v"], 16), int(m["d"], 16), int(m["c"], 16))
        g = GROUP_LINE.match(t)
        if g:
            drivers[g["bdf"]] = (g["drv"], g["g"])
    return [PciDevice(p.bdf, p.vendor, p.device, p.cls, *drivers.get(p.bdf, ("", ""))) for p in found.values()]


def _iort(mem: PhysicalMemory, lines: list[str], d: Discovery) -> Iort | None:
    for t in lines:
        m = IORT_LINE.match(t)
        if not m:
            continue
        pa, n = int(m["pa"], 16), int(m["len"], 16)
        r = mem.read_partial(pa, min(n, MAX_IORT))
        if r.holes:
            d.notes.append(f"IORT at {pa:#x}: not in the dump ({r.holes[0].state.value})")
            return None
        try:
            iort = parse_iort(r.data)
        except IortError as exc:
            d.notes.append(f"IORT at {pa:#x} rejected: {exc}")
            return None
        d.notes.append(f"IORT at {pa:#x}: {len(iort.smmus)} SMMUv3 node(s), {len(iort.root_complexes)} root complex(es)")
        d.iort_addr = pa
        return iort
    return None


def _device_tree(mem: PhysicalMemory, candidates: list[int], d: Discovery) -> tuple[DeviceTree | None, int | None]:
    """The first FDT blob that parses and describes an SMMUv3 (arm64 keeps the boot DT in RAM)."""
    for pa in candidates:
        head = mem.read_partial(pa, 8)
        if head.holes:
            continue
        total = int.from_bytes(head.data[4:8], "big")
        r = mem.read_partial(pa, min(total, MAX_FDT))
        if r.holes:
            d.notes.append(f"device tree at {pa:#x}: not all in the dump")
            continue
        try:
            dt = parse_fdt(r.data)
        except FdtError as exc:
            d.notes.append(f"device tree candidate at {pa:#x} rejected: {exc}")
            continue
        if dt.smmus():
            d.notes.append(f"device tree at {pa:#x}: {len(dt.nodes)} nodes, {len(dt.smmus())} SMMUv3 node(s)")
            return dt, pa
    return None, None


def _registered(mem: PhysicalMemory, d: Discovery, syms: Symbols | None) -> None:
    """Tie copies to SMMUs by name through ``iommu_device_list`` when symbols name it."""
    if syms is None and len(d.smmus) > 1 and "SYMBOL(kallsyms_names)" in mem.vmcoreinfo():
        try:
            syms = Symbols.from_kallsyms(mem, {"iommu_device_list", "arm_smmu_ops"})
        except SymbolError as exc:
            d.notes.append(str(exc))
    if syms is None:
        return
    found, notes = walk(mem, syms)
    d.notes += notes
    for r in found:
        s = next((s for s in d.smmus if s.name == r.name), None)
        if s is None:
            s = FoundSmmu(r.name or f"smmu{len(d.smmus)}")
            d.smmus.append(s)
        if r.copy is not None and s.copy is None:
            s.copy = r.copy
            s.evidence.append(Evidence(f"registered on iommu_device_list (node {r.node:#x}, device {r.name!r}, symbols from "
                                       f"{syms.source}): the driver's strtab_cfg ({r.copy.layout} layout) just before it",
                                       "kernel memory", r.copy.addr))
            _describe_copy(s, r.copy)


def _tie(d: Discovery, copies: list[DriverCopy]) -> None:
    """Give each SMMU its driver copy: by ias/oas when those tell them apart, else in order."""
    left = list(copies)
    open_ = [s for s in d.smmus if s.copy is None]  # those the driver's own list did not already name
    by_order = len(copies) == len(open_) and not any(c.ias for c in copies)  # 6.12 keeps no ias/oas beside its copy
    for s in open_:
        match = [c for c in left if c.ias == s.ias and c.oas == s.oas] or ([] if len(open_) > 1 and not by_order else left)
        if not match:
            continue
        c = match[0]
        left.remove(c)
        s.copy = c
        if len(open_) > 1 and c.ias is None:
            s.assumptions.append(f"the driver copy at {c.addr:#x} tied to {s.name} by order (the copies are in the order "
                                 "the SMMUs probed; nothing beside them names the SMMU)")
        _describe_copy(s, c)
    if left:
        d.notes.append(f"{len(left)} driver register copies not tied to an SMMU of the kernel log: "
                       + ", ".join(f"{c.addr:#x}" for c in left))


def _shapes(d: Discovery) -> None:
    """Corroborate each driver copy with a table found by shape; give the SMMUs without one the
    best shape candidates left (2-level first unless the feature word says the SMMU has none)."""
    left = list(d.tables)
    for s in d.smmus:
        if s.copy is None:
            continue
        same = next((t for t in left if t.base == s.copy.strtab_dma), None)
        if same is not None:
            left.remove(same)
            s.evidence.append(Evidence(f"shape agrees: {same.describe()}", "memory shape", same.base))
        else:
            s.evidence.append(Evidence(f"no table of the shape Linux writes at {s.copy.strtab_dma:#x}", "memory shape"))
    rids = {p.rid for p in d.devices}
    for s in d.smmus:
        if s.copy is not None:
            continue
        two = s.feature("2_LVL_STRTAB") is not False
        fits = [t for t in left if (t.fmt is TableFormat.TWO_LEVEL) == two and t.score > 0]
        if not fits:
            continue
        # independent evidence first: the log's PCI devices whose L1 entry the table populates, then shape
        pick = max(fits, key=lambda t: (_device_hits(t, rids), t.score, -t.base))
        left.remove(pick)
        s.table = pick
        hits = _device_hits(pick, rids)
        s.evidence.append(Evidence(f"table found by shape (the driver's copy of its registers was not): {pick.describe()}"
                                   + (f"; the L1 entries of {hits} of the log's {len(rids)} PCI devices (StreamID = RID) are "
                                      "populated" if rids else ""), "memory shape", pick.base))
        s.assumptions.append(f"LOG2SIZE {pick.log2size} and SIDSIZE {pick.log2size}: the table's length is recorded nowhere "
                             "the dump showed; taken from its populated entries")
        if len([t for t in d.tables if t.fmt is pick.fmt and t.score == pick.score]) > 1:
            s.assumptions.append(f"several table candidates score {pick.score}: the lowest address was taken")


def _describe_copy(s: FoundSmmu, c: DriverCopy) -> None:
    if c.strtab_base is not None:
        regs = f"STRTAB_BASE {c.strtab_base:#x}, STRTAB_BASE_CFG {c.strtab_base_cfg:#x}, {c.num_l1_ents} L1 entries"
    elif c.layout == "6.12-linear":
        regs = f"linear table ste_dma {c.strtab_dma:#x}, {c.num_l1_ents} STEs (6.12 layout: the registers are rebuilt from it)"
    else:
        regs = f"l1_dma {c.strtab_dma:#x}, {c.num_l1_ents} L1 entries (6.12 layout: the registers are rebuilt from it)"
    s.evidence.append(Evidence(f"the driver's arm_smmu_strtab_cfg: {regs}; sid_bits {c.sid_bits}, "
                               f"ssid_bits {c.ssid_bits}, asid_bits {c.asid_bits}, vmid_bits {c.vmid_bits}"
                               + (f"; ias/oas {c.ias}/{c.oas} as the log says" if c.ias is not None and c.ias == s.ias and c.oas == s.oas else ""),
                               "kernel memory", c.addr))


def _device_hits(t: TableCandidate, rids: set[int]) -> int:
    """How many requester IDs land on a populated L1 entry (2-level) or inside the table (linear)."""
    if t.fmt is TableFormat.LINEAR:
        return sum(r < t.covered for r in rids)
    populated = {i for i, _ in t.l2}
    return sum((r >> STRTAB_SPLIT) in populated for r in rids)


def _firmware(s: FoundSmmu, d: Discovery) -> None:
    if d.dt is not None:
        dtn = next((n for n in d.dt.smmus() if n.base == s.base), None)
        if dtn is not None:
            s.evidence.append(Evidence(f"device tree node {dtn.path}: {'dma-coherent' if dtn.coherent else 'no dma-coherent'}",
                                       "device tree", d.dt_addr))
            if s.coherent is None:
                s.coherent = dtn.coherent
    if d.iort is None:
        return
    nodes = d.iort.smmus
    if s.base is not None:
        node = next((n for n in nodes if n.base == s.base), None)
    else:  # ACPI device names (arm-smmu-v3.N.auto) carry no address: the n-th node for the n-th SMMU, when counts agree
        node = nodes[d.smmus.index(s)] if len(nodes) == len(d.smmus) else None
    if node is None:
        return
    pa = d.iort_addr
    if s.base is None:
        s.base = node.base
        how = "" if len(nodes) == 1 else f" (the {d.smmus.index(s) + 1}. of {len(nodes)}, in the order the log names the SMMUs)"
        s.evidence.append(Evidence(f"MMIO base {node.base:#x} from the IORT SMMUv3 node at offset {node.offset:#x}{how}", "IORT", pa))
    s.evidence.append(Evidence(f"IORT COHACC override: {'coherent' if node.coherent else 'not coherent'}", "IORT", pa))
    if s.coherent is None:
        s.coherent = node.coherent


def _assume(s: FoundSmmu) -> None:
    s.assumptions += [
        "CR0.SMMUEN=1: the crashed kernel left the SMMU enabled (no dump records MMIO registers)",
        "GERROR/GERRORN: no active global error, no Service Failure Mode (not recorded in the dump)",
    ]


def _dt_maps(s: FoundSmmu, d: Discovery) -> list[tuple[str, int, int, int]] | None:
    if d.dt is None:
        return None
    node = next((n for n in d.dt.smmus() if n.base == s.base), None)
    if node is None or node.phandle is None:
        return None
    for path, sid in d.dt.iommus(node.phandle):
        s.devices.setdefault(sid, []).append(path)
    maps = d.dt.iommu_maps(node.phandle)
    for path, rid_base, sid_base, length in maps:
        s.evidence.append(Evidence(f"{path} iommu-map: RIDs {rid_base:#x}-{rid_base + length - 1:#x} -> StreamIDs from {sid_base:#x}",
                                   "device tree", d.dt_addr))
    return maps


def _names(s: FoundSmmu, d: Discovery) -> None:
    """StreamID -> device labels: the IORT's root-complex mappings, the DT's ``iommu-map`` (and
    platform devices' ``iommus``), or StreamID = RID where neither was read."""
    maps = _dt_maps(s, d)
    identity = d.iort is None and maps is None
    if identity and d.devices:
        s.assumptions.append("PCI StreamID = requester ID (bus << 8 | devfn): no IORT or device-tree iommu-map was read")
    for p in d.devices:
        if maps is not None:
            sid = next((sb + p.rid - rb for _, rb, sb, n in maps if rb <= p.rid < rb + n), None)
        elif identity:
            sid = p.rid
        else:
            assert d.iort is not None
            hit = d.iort.stream_id(p.segment, p.rid)
            sid = hit[1] if hit and (s.base is None or hit[0].base == s.base) else None
        if sid is not None:
            s.devices.setdefault(sid, []).append(p.label())

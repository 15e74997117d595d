"""What a crashed Linux kernel leaves in memory about its SMMUs, written by ``synth`` so that
discovery can be tested without the captures: the printk ring (with the VMCOREINFO that lays it
out), the driver's copy of its stream-table registers in the 6.1 or 6.12 layout, the boot device
tree or the ACPI IORT table, and decoy tables of the shape Linux writes.

A scenario's ``kernel`` section::

    kernel:
      at: '0x41f00000'      # where these structures go (default: the last MiB of the first RAM range)
      layout: '6.1'         # the driver's register copy: '6.1', 'pre-5.10', '6.12' (2-level or linear) or none
      firmware: dt          # dt (a device tree with iommu-map) or acpi (an IORT table), or none
      log: true             # a printk ring with the lines the kernel prints (or false: no ring)
      printk: ring          # ring (5.10+) or legacy (log_buf, before 5.10)
      va_layout: '5.4'      # '5.4' (5.4+ kernel VA layout) or '4.x' (before the VA flip)
      extra_log: ['...']    # more lines
      pci: [{bdf: '0000:00:01.0', vendor: '0x1af4', device: '0x1042', class: '0x010000', driver: virtio-pci, group: 1}]
      decoys: [{base: '0x41000000', l2_base: '0x41010000', l1: [0]}]
      symbols: false        # iommu_device_list through each SMMU's struct iommu_device, and OUT.System.map

Layouts are the readers' own (:mod:`smmu_forensics.discover.printk` offsets as in the 6.1 capture's
VMCOREINFO, :data:`smmu_forensics.discover.iort.IortHeader` built by Construct, the FDT tokens of
:mod:`smmu_forensics.discover.fdt`), so a misunderstanding shared by writer and reader is caught
only by the captures: these writers serve unit tests, the captures judge.
"""

from __future__ import annotations

import struct
from typing import Any

from smmu_forensics.discover import fdt as F
from smmu_forensics.discover import iort as I
from smmu_forensics.discover.driver import VMID_MAP_BYTES
from smmu_forensics.discover.printk import DESC_FLAGS_SHIFT, STATE_FINALIZED
from smmu_forensics.discover.smmus import FEATURES
from smmu_forensics.errors import UsageError
from smmu_forensics.smmu import fields as L
from smmu_forensics.synth.image import MemoryImage
from smmu_forensics.synth.writers import DEFAULT_VMCOREINFO

__all__ = ["PRINTK_LAYOUT", "write_kernel"]

#: OFFSET/SIZE entries of the ring as the 6.1 capture's VMCOREINFO gives them (arm64, 64-bit)
PRINTK_LAYOUT = {
    "OFFSET(printk_ringbuffer.desc_ring)": "0", "OFFSET(printk_ringbuffer.text_data_ring)": "48",
    "OFFSET(prb_desc_ring.count_bits)": "0", "OFFSET(prb_desc_ring.descs)": "8", "OFFSET(prb_desc_ring.infos)": "16",
    "OFFSET(prb_desc_ring.head_id)": "24", "OFFSET(prb_desc_ring.tail_id)": "32", "OFFSET(prb_data_ring.size_bits)": "0",
    "OFFSET(prb_data_ring.data)": "8", "SIZE(prb_desc)": "24", "SIZE(printk_info)": "88", "OFFSET(atomic_long_t.counter)": "0",
    "OFFSET(prb_desc.state_var)": "0", "OFFSET(prb_desc.text_blk_lpos)": "8", "OFFSET(prb_data_blk_lpos.begin)": "0",
    "OFFSET(prb_data_blk_lpos.next)": "8", "OFFSET(printk_info.seq)": "0", "OFFSET(printk_info.ts_nsec)": "8",
    "OFFSET(printk_info.text_len)": "16", "OFFSET(printk_info.dev_info)": "24", "OFFSET(dev_printk_info.subsystem)": "0",
    "OFFSET(dev_printk_info.device)": "16",
}
MASK64 = (1 << 64) - 1
PAGE_OFFSET_48 = (-(1 << 48)) & MASK64  # 5.4+
PAGE_OFFSET_48_4X = (-(1 << 47)) & MASK64  # before 5.4 (see discover.kva)
IMAGE_4X = 0xFFFF000008000000  # where a 4.x arm64 kernel image starts (KIMAGE_VADDR, no KASLR)
#: log_buf_vmcoreinfo_setup() of 4.x-5.9 (kernel/printk/printk.c): struct printk_log { u64 ts_nsec;
#: u16 len, text_len, dict_len; u8 facility; u8 flags:5, level:3; } (16 bytes)
IOMMU_DEVICE = 40  # struct iommu_device's first five words: list (next, prev), ops, fwnode, dev
LEGACY_LAYOUT = {"SIZE(printk_log)": "16", "OFFSET(printk_log.ts_nsec)": "0", "OFFSET(printk_log.len)": "8",
                 "OFFSET(printk_log.text_len)": "10", "OFFSET(printk_log.dict_len)": "12"}


class _Kernel:
    def __init__(self, img: MemoryImage, at: int, va_layout: str) -> None:
        self.img, self.next = img, at
        self.phys = min((s for s, _ in img.ram), default=0)
        self.flipped = va_layout != "4.x"
        if self.flipped:
            self.voff = int(DEFAULT_VMCOREINFO["NUMBER(kimage_voffset)"], 16)
        else:  # before 5.4: the image in the lower half of the kernel VA space, the linear map in the upper
            self.voff = (IMAGE_4X - self.phys) & MASK64
            img.vmcoreinfo.update({"NUMBER(kimage_voffset)": f"{self.voff:#x}", "SYMBOL(_stext)": f"{IMAGE_4X + 0x81000:x}",
                                   "SYMBOL(swapper_pg_dir)": f"{IMAGE_4X + 0x1d58000:x}", "OSRELEASE": "4.18.0-synth"})

    def take(self, size: int, align: int = 64) -> int:
        a = -(-self.next // align) * align
        self.next = a + size
        if not self.img.in_ram(a, size):
            raise UsageError(f"scenario: kernel structures at {a:#x}+{size:#x} do not fit in RAM (set kernel.at)")
        return a

    def lm(self, pa: int) -> int:
        """The linear-map VA of ``pa`` (VA_BITS 48)."""
        return (PAGE_OFFSET_48 if self.flipped else PAGE_OFFSET_48_4X) + pa - self.phys

    def image(self, pa: int) -> int:
        """The kernel-image VA of ``pa`` (where a kernel variable such as ``prb`` or ``log_buf`` lives)."""
        return (pa + self.voff) & MASK64


def _i(v: Any) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


def _feature_word(regs: dict[str, Any]) -> int:
    idr0 = _i(regs.get("idr0", 0))
    bits = {"2_LVL_STRTAB": L.get(L.IDR0, idr0, "ST_LEVEL") == 1, "2_LVL_CDTAB": bool(L.get(L.IDR0, idr0, "CD2L")),
            "TRANS_S1": bool(L.get(L.IDR0, idr0, "S1P")), "TRANS_S2": bool(L.get(L.IDR0, idr0, "S2P")),
            "COHERENCY": bool(regs.get("coherent", L.get(L.IDR0, idr0, "COHACC")))}
    return sum(1 << FEATURES[k] for k, on in bits.items() if on)


def _oas(regs: dict[str, Any]) -> int:
    return L.OAS_BITS.get(L.get(L.IDR5, _i(regs.get("idr5", 0)), "OAS"), 48)


def write_kernel(img: MemoryImage, spec: dict[str, Any], smmus: list[dict[str, Any]]) -> None:
    """Write the ``kernel`` section's structures for the SMMUs whose register values are ``smmus``."""
    start, size = img.ram[0]
    k = _Kernel(img, _i(spec.get("at", start + size - (1 << 20))), str(spec.get("va_layout", "5.4")))
    fw = str(spec.get("firmware", "dt"))
    pci = [{**p, "bdf": str(p["bdf"])} for p in spec.get("pci", [])]
    lines: list[str] = []
    devnames: list[str] = []
    for i, r in enumerate(smmus):
        base = _i(r.get("base", 0x9050000 + 0x20000 * i))
        dev = f"{base:x}.smmuv3" if fw == "dt" else f"arm-smmu-v3.{i}.auto"
        devnames.append(dev)
        oas = _oas(r)
        lines.append(f"arm-smmu-v3 {dev}: ias {oas}-bit, oas {oas}-bit (features 0x{_feature_word(r):08x})")
    for p in pci:
        lines.append(f"pci {p['bdf']}: [{_i(p['vendor']):04x}:{_i(p['device']):04x}] type 00 class 0x{_i(p['class']):06x}")
    for p in pci:
        if p.get("driver"):
            lines.append(f"{p['driver']} {p['bdf']}: Adding to iommu group {p.get('group', 0)}")
    if fw == "dt":
        _fdt(k, smmus)
    elif fw == "acpi":
        pa, n = _iort(k, smmus)
        lines.insert(0, f"ACPI: IORT 0x{pa:016X} {n:06X} (v03 SYNTH  SYNTHIORT 00000001 SYN 00000001)")
    layout = str(spec.get("layout", "6.1"))
    nodes = []
    for r in smmus:
        if layout in ("6.1", "pre-5.10"):
            nodes.append(_copy_61(k, r, legacy=layout == "pre-5.10"))
        elif layout == "6.12":
            nodes.append(_copy_612(k, r))
    if spec.get("symbols") and nodes:
        _iommu_list(k, nodes, devnames)
    for d in spec.get("decoys", []):
        _decoy(img, _i(d["base"]), _i(d["l2_base"]), [int(x) for x in d.get("l1", [0])])
    if spec.get("log", True):
        write_log = _legacy if spec.get("printk", "ring") == "legacy" else _printk
        write_log(k, lines + [str(x) for x in spec.get("extra_log", [])])


def _printk(k: _Kernel, lines: list[str]) -> None:
    """A lockless printk ring (kernel/printk/printk_ringbuffer.h) holding ``lines``, finalized."""
    count_bits = max(4, len(lines).bit_length())
    texts = [t.encode() for t in lines]
    size = 1 << max(12, (sum(8 + -(-len(t) // 8) * 8 for t in texts)).bit_length())
    prb_var = k.take(8, 8)
    rb = k.take(96, 8)
    descs = k.take(24 << count_bits)
    infos = k.take(88 << count_bits)
    data = k.take(size, 8)
    k.img.vmcoreinfo.update(PRINTK_LAYOUT)
    k.img.vmcoreinfo["SYMBOL(prb)"] = f"{k.image(prb_var):x}"
    k.img.write(prb_var, struct.pack("<Q", k.lm(rb)))
    k.img.write(rb, struct.pack("<IIQQQQ", count_bits, 0, k.lm(descs), k.lm(infos), len(texts) - 1, 0))
    k.img.write(rb + 48, struct.pack("<IIQ", (size.bit_length() - 1), 0, k.lm(data)))
    lpos = 0
    for rid, t in enumerate(texts):
        blk = struct.pack("<Q", rid) + t
        blk += bytes(-len(blk) % 8)
        k.img.write(data + lpos, blk)
        k.img.write(descs + 24 * rid, struct.pack("<QQQ", rid | STATE_FINALIZED << DESC_FLAGS_SHIFT, lpos, lpos + len(blk)))
        k.img.write(infos + 88 * rid, struct.pack("<QQH", rid, 1000 * (rid + 1), len(t)))
        lpos += len(blk)


def _legacy(k: _Kernel, lines: list[str]) -> None:
    """A pre-5.10 ``log_buf``: records of a 16-byte ``struct printk_log`` header and the text, each
    padded to 8 bytes (LOG_ALIGN), from index 0; the pointer and the indexes in image variables."""
    recs = b""
    for i, t in enumerate(x.encode() for x in lines):
        ln = 16 + len(t) + (-(16 + len(t)) % 8)
        recs += struct.pack("<QHHHBB", 1000 * (i + 1), ln, len(t), 0, 0, 6 << 5) + t + bytes(ln - 16 - len(t))
    size = 1 << max(12, len(recs).bit_length())
    buf = k.take(size, 8)
    var = k.take(32, 8)  # log_buf (pointer), log_buf_len, log_first_idx, log_next_idx
    k.img.write(buf, recs)
    k.img.write(var, struct.pack("<QIII", k.lm(buf), size, 0, len(recs)))
    k.img.vmcoreinfo.update(LEGACY_LAYOUT)
    k.img.vmcoreinfo.update({"SYMBOL(log_buf)": f"{k.image(var):x}", "SYMBOL(log_buf_len)": f"{k.image(var + 8):x}",
                             "SYMBOL(log_first_idx)": f"{k.image(var + 12):x}", "SYMBOL(log_next_idx)": f"{k.image(var + 16):x}"})


def _geometry(r: dict[str, Any]) -> tuple[int, int, int, int]:
    base, cfg = _i(r["strtab_base"]), _i(r["strtab_base_cfg"])
    dma = L.get(L.STRTAB_BASE, base, "ADDR")
    log2size, split = L.get(L.STRTAB_BASE_CFG, cfg, "LOG2SIZE"), L.get(L.STRTAB_BASE_CFG, cfg, "SPLIT")
    two = L.get(L.STRTAB_BASE_CFG, cfg, "FMT") == L.StrtabFmt.TWO_LEVEL
    return dma, 1 << (log2size - split if two else log2size), base, cfg


def _copy_61(k: _Kernel, r: dict[str, Any], legacy: bool = False) -> int:
    """``struct arm_smmu_device`` from ``ias`` to ``strtab_cfg`` (6.1 layout, or with ``legacy`` the
    pre-5.10 one; see discover.driver)."""
    dma, n, base, cfg = _geometry(r)
    idr0, idr1 = _i(r.get("idr0", 0)), _i(r.get("idr1", 0))
    oas = _oas(r)
    asid, vmid = (16 if L.get(L.IDR0, idr0, "ASID16") else 8), (16 if L.get(L.IDR0, idr0, "VMID16") else 8)
    if legacy:  # before 5.10: asid_bits, asid_map, vmid_bits, vmid_map
        head = k.take(24 + 2 * (8 + VMID_MAP_BYTES) + 8 + 48 + IOMMU_DEVICE, 8)
        k.img.write(head, struct.pack("<QQQI", oas, oas, 0x40201000, asid))
        k.img.write(head + 24 + 8 + VMID_MAP_BYTES, struct.pack("<I", vmid))
        cfg_at = head + 24 + 2 * (8 + VMID_MAP_BYTES) + 8
    else:
        head = k.take(32 + VMID_MAP_BYTES + 8 + 48 + IOMMU_DEVICE, 8)
        k.img.write(head, struct.pack("<QQQII", oas, oas, 0x40201000, asid, vmid))
        cfg_at = head + 32 + VMID_MAP_BYTES + 8
    k.img.write(cfg_at - 8, struct.pack("<II", L.get(L.IDR1, idr1, "SSIDSIZE"), L.get(L.IDR1, idr1, "SIDSIZE")))
    k.img.write(cfg_at, struct.pack("<QQQIIQI", k.lm(dma), dma, k.lm(dma + 0x100000), n, 0, base, cfg))
    return cfg_at + 48


def _copy_612(k: _Kernel, r: dict[str, Any]) -> int:
    """6.12's ``strtab_cfg`` after sid/ssid bits: the union's ``l2 = { l1tab, l2ptrs, l1_dma,
    num_l1_ents }`` for a 2-level table, ``linear = { table, ste_dma, num_ents }`` (num_ents =
    1 << sid_bits, as ``arm_smmu_init_strtab_linear()`` sets it) for a linear one."""
    dma, n, _base, cfg = _geometry(r)
    idr1 = _i(r.get("idr1", 0))
    sid_bits = L.get(L.IDR1, idr1, "SIDSIZE")
    at = k.take(48 + IOMMU_DEVICE, 8)
    k.img.write(at, struct.pack("<II", L.get(L.IDR1, idr1, "SSIDSIZE"), sid_bits))
    if L.get(L.STRTAB_BASE_CFG, cfg, "FMT") == L.StrtabFmt.TWO_LEVEL:
        k.img.write(at + 8, struct.pack("<QQQI", k.lm(dma), k.lm(dma + 0x100000), dma, n))
    else:
        if n != 1 << sid_bits:
            raise UsageError("scenario: kernel.layout 6.12 with a linear table needs LOG2SIZE == IDR1.SIDSIZE (the kernel's num_ents)")
        k.img.write(at + 8, struct.pack("<QQI", k.lm(dma), dma, n))
    return at + 8 + 32


def _iommu_list(k: _Kernel, nodes: list[int], names: list[str]) -> None:
    """``iommu_device_list`` through each SMMU's ``struct iommu_device`` (right after its strtab_cfg),
    with another driver's node first (its ops are not ``arm_smmu_ops``); symbols for a System.map."""
    head, ops, other_ops = k.take(16, 8), k.take(64, 8), k.take(64, 8)
    other = k.take(IOMMU_DEVICE, 8)
    chain = [other] + nodes
    for i, node in enumerate(chain):
        nxt = k.lm(chain[i + 1]) if i + 1 < len(chain) else k.image(head)
        name = (names[i - 1] if 0 < i <= len(names) else "other-iommu").encode() + b"\0"
        dev = k.take(8 + len(name), 8)
        k.img.write(dev, struct.pack("<Q", k.lm(dev + 8)) + name)
        k.img.write(node, struct.pack("<QQQQQ", nxt, 0, k.image(ops if i else other_ops), 0, k.lm(dev)))
    k.img.write(head, struct.pack("<QQ", k.lm(chain[0]), k.lm(chain[-1])))
    k.img.symbols.update({"iommu_device_list": k.image(head), "arm_smmu_ops": k.image(ops), "other_iommu_ops": k.image(other_ops)})


def _fdt(k: _Kernel, smmus: list[dict[str, Any]]) -> None:
    """A device tree: one ``arm,smmu-v3`` node per SMMU (phandle i+1) and a PCIe host bridge whose
    ``iommu-map`` sends RIDs 0-0xffff to the first SMMU with StreamID = RID."""
    strings: dict[str, int] = {}
    out = bytearray()

    def prop(name: str, value: bytes) -> None:
        off = strings.setdefault(name, sum(len(s) + 1 for s in strings))
        out.extend(struct.pack(">III", F.FDT_PROP, len(value), off) + value + bytes(-len(value) % 4))

    def begin(name: str) -> None:
        raw = name.encode() + b"\0"
        out.extend(struct.pack(">I", F.FDT_BEGIN_NODE) + raw + bytes(-len(raw) % 4))

    begin("")
    prop("#address-cells", struct.pack(">I", 2))
    prop("#size-cells", struct.pack(">I", 2))
    for i, r in enumerate(smmus):
        base = _i(r.get("base", 0x9050000 + 0x20000 * i))
        begin(f"smmuv3@{base:x}")
        prop("compatible", b"arm,smmu-v3\0")
        prop("reg", struct.pack(">IIII", base >> 32, base & 0xFFFFFFFF, 0, 0x20000))
        prop("phandle", struct.pack(">I", i + 1))
        if r.get("coherent", L.get(L.IDR0, _i(r.get("idr0", 0)), "COHACC")):
            prop("dma-coherent", b"")
        out.extend(struct.pack(">I", F.FDT_END_NODE))
    if smmus:
        begin("pcie@10000000")
        prop("compatible", b"pci-host-ecam-generic\0")
        prop("iommu-map", struct.pack(">IIII", 0, 1, 0, 0x10000))
        out.extend(struct.pack(">I", F.FDT_END_NODE))
    out.extend(struct.pack(">II", F.FDT_END_NODE, F.FDT_END))
    strs = b"".join(s.encode() + b"\0" for s in strings)
    off_struct = 40 + 16
    total = off_struct + len(out) + len(strs)
    head = struct.pack(">10I", F.MAGIC, total, off_struct, off_struct + len(out), 40, 17, 16, 0, len(strs), len(out))
    at = k.take(total, 8)
    k.img.write(at, head + bytes(16) + bytes(out) + strs)


def _iort(k: _Kernel, smmus: list[dict[str, Any]]) -> tuple[int, int]:
    """An IORT: one SMMUv3 node per SMMU and a root complex (segment 0) mapping RIDs 0-0xffff to
    the first SMMU with StreamID = RID.  Returns (physical address, length)."""
    node_hdr = I.NodeHeader.sizeof()
    smmu_len = node_hdr + I.Smmuv3Data.sizeof()
    nodes = b""
    first = I.IortHeader.sizeof()
    for i, r in enumerate(smmus):
        base = _i(r.get("base", 0x9050000 + 0x20000 * i))
        coh = r.get("coherent", L.get(L.IDR0, _i(r.get("idr0", 0)), "COHACC"))
        nodes += I.NodeHeader.build(dict(type=I.NODE_SMMUV3, length=smmu_len, revision=4, identifier=i, num_id_mappings=0,
                                         id_mapping_offset=0))
        nodes += I.Smmuv3Data.build(dict(base_address=base, flags=I.SMMUV3_COHACC_OVERRIDE if coh else 0, reserved=0,
                                         vatos_address=0, model=0))
    rc_body = node_hdr + I.RootComplexData.sizeof()
    nodes += I.NodeHeader.build(dict(type=I.NODE_ROOT_COMPLEX, length=rc_body + I.IdMappingS.sizeof(), revision=3,
                                     identifier=len(smmus), num_id_mappings=1, id_mapping_offset=rc_body))
    nodes += I.RootComplexData.build(dict(cache_coherent=1, alloc_hints=0, reserved=0, mem_access_flags=0, ats_attribute=0,
                                          pci_segment=0))
    nodes += I.IdMappingS.build(dict(input_base=0, id_count=0xFFFF, output_base=0, output_reference=first, flags=0))
    length = first + len(nodes)
    acpi = dict(signature=b"IORT", length=length, revision=3, checksum=0, oem_id=b"SYNTH ", oem_table_id=b"SYNTHIOR",
                oem_revision=1, creator_id=b"SYN ", creator_revision=1)
    raw = bytearray(I.IortHeader.build(dict(acpi=acpi, num_nodes=len(smmus) + 1, node_offset=first, reserved=0)) + nodes)
    raw[9] = -sum(raw) & 0xFF
    at = k.take(length, 8)
    k.img.write(at, bytes(raw))
    return at, length


def _decoy(img: MemoryImage, base: int, l2_base: int, l1: list[int]) -> None:
    """A stale 2-level table of the shape Linux writes: abort STEs in 16 KiB L2s, Span-9 descriptors."""
    abort = struct.pack("<QQ", 1, 1 << 44) + bytes(48)  # V, Config abort; SHCFG incoming (as 6.1 writes it)
    for j, idx in enumerate(l1):
        l2 = l2_base + j * L.STRTAB_L2_BYTES
        img.write(l2, abort * L.STRTAB_NUM_L2_STES)
        img.write(base + 8 * idx, struct.pack("<Q", l2 | (L.STRTAB_SPLIT + 1)))

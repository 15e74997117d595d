"""inspect with nothing but the dump: the SMMUs, their registers and stream tables, and the
devices behind each StreamID, found in the dump and checked against the captures' ground truth
and against the same inspection with the real register values."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import CAPTURE, SHARED, needs_captures, run_cli
from smmu_forensics.discover.driver import VMID_MAP_BYTES, find_driver_copies
from smmu_forensics.discover.iort import IortError
from smmu_forensics.discover.iort import parse as parse_iort
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.synth.image import MemoryImage
from smmu_forensics.synth.writers import write_elf

ACPI = SHARED / "captures" / "acpi-kdump"
DUMPS = [CAPTURE / "mdf-c-d31.kdump", CAPTURE / "qemu-kdump-zlib.flat", ACPI / "kdump-mdf-l-d31.kdump"]


def _inspect(dump, *extra: str) -> tuple[int, dict]:
    p = run_cli("inspect", str(dump), "--format", "json", "--rules", "all", "--all", *extra)
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


@needs_captures
@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_discovery_gives_what_the_registers_give(dump, tmp_path):
    link = tmp_path / ("dump" + dump.suffix)  # no sidecar, no register file
    link.symlink_to(dump)
    code_d, found = _inspect(link)
    code_r, given = _inspect(dump, "--regs", str(dump.parent / "registers.json"))
    s, g = found["smmus"][0], given["smmus"][0]
    assert code_d == code_r == 0
    truth = json.loads((dump.parent / "ground_truth.json").read_text())
    assert int(s["registers"]["base"], 16) == int(truth["smmu_base"], 16)
    for k in ("strtab_base", "strtab_base_cfg"):
        assert s["registers"][k] == g["registers"][k]
    for k in ("format", "base", "log2size", "split", "l1", "cd_tables", "ste_summary"):
        assert s["table"][k] == g["table"][k], k
    assert [(e["sid"], e["raw"], e["config"]) for e in s["table"]["stes"]] == [(e["sid"], e["raw"], e["config"]) for e in g["table"]["stes"]]
    for rs in ("v6", "v7", "latest"):
        assert (s["verdicts"][rs]["decision"], s["verdicts"][rs]["rule"]) == (g["verdicts"][rs]["decision"], g["verdicts"][rs]["rule"])
        assert any("SMMUEN" in a for a in s["verdicts"][rs]["assumptions"]) and g["verdicts"][rs]["assumptions"] == []
    assert sorted(f["id"] for f in s["findings"]) == sorted(f["id"] for f in g["findings"])
    assert "kernel memory" in s["discovery"]["sources"] and "discovery" not in g
    by_sid = {e["sid"]: e.get("devices", []) for e in s["table"]["stes"]}
    for dev in truth["pci_devices"]:
        names = by_sid.get(int(dev["stream_id"], 16), [])
        assert any(n.startswith(dev["bdf"]) for n in names), (dev["bdf"], names)
        assert all(dev["bdf"] not in n for sid, ns in by_sid.items() if sid != int(dev["stream_id"], 16) for n in ns)


@needs_captures
def test_discover_command_and_saved_registers(tmp_path):
    dump = ACPI / "kdump-mdf-l-d31.kdump"
    saved = tmp_path / "found.json"
    p = run_cli("discover", str(dump), "--format", "json", "--save-regs", str(saved))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["iort"] == "0x5b40e418" and d["smmus"][0]["base"] == "0x9050000" and d["smmus"][0]["coherent"] is True
    assert d["smmus"][0]["devices"]["0x300"] == ["0000:03:00.0 [1af4:1041] virtio-pci"]
    code, rep = _inspect(dump, "--regs", str(saved))  # the saved file is a register file like any other
    assert code == 0 and rep["smmus"][0]["registers"]["strtab_base"] == "0x400000005b54b000"
    assert run_cli("discover", str(dump)).stdout.count(b"SID 0x") == 9


def test_driver_copy_found_in_a_synthetic_dump(tmp_path):
    """The 6.1 layout written by hand into RAM: found, and every width read back."""
    img = MemoryImage()
    img.ram = [(0x40000000, 0x200000)]
    cfg_at = 0x40100000 + 0x40  # strtab_cfg
    widths = struct.pack("<QQQII", 44, 48, 0x40201000, 16, 8)
    img.write(cfg_at - 8 - VMID_MAP_BYTES - 32, widths + bytes(VMID_MAP_BYTES))
    img.write(cfg_at - 8, struct.pack("<II", 5, 16))  # ssid_bits, sid_bits
    img.write(cfg_at, struct.pack("<QQQIIQI", 0xFFFF000001180000, 0x41180000, 0, 256, 0, 0x41180000 | 1 << 62, 0x10210))
    write_elf(img, str(tmp_path / "d.elf"))
    with open_dump(str(tmp_path / "d.elf")) as mem:
        (c,) = find_driver_copies(mem)
    assert (c.addr, c.strtab_base, c.strtab_base_cfg, c.num_l1_ents) == (cfg_at, 0x41180000 | 1 << 62, 0x10210, 256)
    assert (c.sid_bits, c.ssid_bits, c.asid_bits, c.vmid_bits, c.ias, c.oas) == (16, 5, 16, 8, 44, 48)


def _iort(nodes: bytes, num: int, length: int | None = None, fix_sum: bool = True) -> bytes:
    body = struct.pack("<III", num, 48, 0) + nodes
    n = 36 + len(body) if length is None else length
    raw = bytearray(b"IORT" + struct.pack("<IBB", n, 3, 0) + b"QEMU  QEMUIORT" + struct.pack("<I", 1) + b"QEMU" + struct.pack("<I", 1) + body)
    if fix_sum:
        raw[9] = (-sum(raw)) & 0xFF
    return bytes(raw)


def _node(typ: int, data: bytes, mappings: list[tuple[int, int, int, int]] = (), length: int | None = None) -> bytes:
    maps = b"".join(struct.pack("<IIIII", *m, 0) for m in mappings)
    n = 16 + len(data) + len(maps) if length is None else length
    return struct.pack("<BHBIII", typ, n, 0, 0, len(mappings), 16 + len(data) if mappings else 0) + data + maps


def test_iort_parsing_and_every_way_it_can_lie():
    smmu = _node(4, struct.pack("<QIIQI", 0x9050000, 1, 0, 0, 0) + bytes(28))
    rc = _node(2, struct.pack("<IBHBII", 1, 0, 0, 3, 0, 0) + bytes(12), [(0, 0xFFFF, 0, 48)])
    good = _iort(smmu + rc, 2)
    iort = parse_iort(good)
    assert [(s.base, s.coherent) for s in iort.smmus] == [(0x9050000, True)]
    assert iort.stream_id(0, 0x108)[1] == 0x108 and iort.stream_id(1, 0x108) is None
    bad = {
        "checksum": good[:9] + bytes([good[9] ^ 1]) + good[10:],
        "length past the bytes": _iort(smmu + rc, 2, length=len(good) + 100),
        "node count": _iort(smmu + rc, 3),
        "zero-length node": _iort(_node(4, b"", length=0), 1),
        "mappings past the node": _iort(_node(2, bytes(20), [(0, 1, 0, 48)], length=40), 1),
        "signature": b"XORT" + good[4:],
    }
    for why, raw in bad.items():
        with pytest.raises(IortError):
            parse_iort(raw)
        assert why


@needs_captures
def test_registers_from_another_run_are_flagged():
    """qemu-panic's dump with acpi-kdump's registers: the kernel recorded another STRTAB_BASE."""
    code, rep = _inspect(CAPTURE / "mdf-l-d31.kdump", "--regs", str(ACPI / "registers.json"))
    f = [x for x in rep["smmus"][0]["findings"] if x["id"] == "REG-NOT-THIS-DUMP"]
    assert f and f[0]["severity"] == "error" and "table 0x431be000" in f[0]["message"]
    text = run_cli("inspect", str(CAPTURE / "mdf-l-d31.kdump"), "--regs", str(ACPI / "registers.json")).stdout.decode()
    assert "worst finding: error REG-NOT-THIS-DUMP" in text[: text.index("Registers")]  # at the top of the report
    code, rep = _inspect(CAPTURE / "mdf-l-d31.kdump", "--regs", str(CAPTURE / "registers.json"))
    assert not [x for x in rep["smmus"][0]["findings"] if x["id"].startswith("REG-")]


def test_an_all_invalid_table_with_smmuen_set(tmp_path):
    from smmu_forensics.synth.scenario import build_scenario, write_outputs

    sc = {"name": "empty", "smmus": [{"name": "smmu0", "stream_table": {"format": "linear", "base": "0x40100000", "log2size": 8,
                                                                        "fill": "zero"}}]}
    out = tmp_path / "e.elf"
    write_outputs(build_scenario(sc), str(out), "elf")
    code, rep = _inspect(out)
    assert any(x["id"] == "REG-TABLE-EMPTY" for x in rep["smmus"][0]["findings"]), rep["smmus"][0]["findings"]


def _fdt(nodes: list[tuple[int, str, dict[str, bytes]]], total_pad: int = 0) -> bytes:
    """A minimal FDT: (depth, name, props) in document order."""
    strings, names, blk = b"", {}, b""
    for name in sorted({k for _, _, p in nodes for k in p}):
        names[name] = len(strings)
        strings += name.encode() + b"\0"
    depth = 0
    for d, name, props in nodes:
        while depth > d:
            blk += struct.pack(">I", 2)
            depth -= 1
        nb = name.encode() + b"\0"
        blk += struct.pack(">I", 1) + nb + b"\0" * (-len(nb) % 4)
        for k, v in props.items():
            blk += struct.pack(">III", 3, len(v), names[k]) + v + b"\0" * (-len(v) % 4)
        depth = d + 1
    blk += struct.pack(">I", 2) * depth + struct.pack(">I", 9)
    off_struct = 40
    off_strings = off_struct + len(blk)
    total = off_strings + len(strings) + total_pad
    return struct.pack(">10I", 0xD00DFEED, total, off_struct, off_strings, 0, 17, 16, 0, len(strings), len(blk)) + blk + strings


def test_device_tree_smmu_and_iommu_map():
    from smmu_forensics.discover.fdt import FdtError
    from smmu_forensics.discover.fdt import parse as parse_fdt

    cells = lambda *c: struct.pack(f">{len(c)}I", *c)  # noqa: E731
    blob = _fdt([(0, "", {"#address-cells": cells(2)}),
                 (1, "smmuv3@9050000", {"compatible": b"arm,smmu-v3\0", "reg": cells(0, 0x9050000, 0, 0x20000),
                                        "dma-coherent": b"", "phandle": cells(7)}),
                 (1, "pcie@10000000", {"iommu-map": cells(0, 7, 0x1000, 0x100)}),
                 (1, "dma@1000", {"iommus": cells(7, 0x42)})])
    dt = parse_fdt(blob)
    (smmu,) = dt.smmus()
    assert (smmu.path, smmu.base, smmu.coherent, smmu.phandle) == ("/smmuv3@9050000", 0x9050000, True, 7)
    assert dt.iommu_maps(7) == [("/pcie@10000000", 0, 0x1000, 0x100)] and dt.iommus(7) == [("/dma@1000", 0x42)]
    lies = {
        "size past the bytes": blob[:4] + struct.pack(">I", len(blob) + 64) + blob[8:],
        "bad token": blob[:40] + struct.pack(">I", 7) + blob[44:],
        "magic": b"\xd0\x0d\xfe\xee" + blob[4:],
        "too deep": _fdt([(i, f"n{i}", {}) for i in range(40)]),
    }
    for why, raw in lies.items():
        with pytest.raises(FdtError):
            parse_fdt(raw)
        assert why


@needs_captures
def test_device_tree_read_from_the_dt_capture():
    p = run_cli("discover", str(CAPTURE / "mdf-l-d31.kdump"), "--format", "json")
    s = json.loads(p.stdout)["smmus"][0]
    what = [e["what"] for e in s["evidence"] if e["source"] == "device tree"]
    assert "device tree node /smmuv3@9050000: dma-coherent" in what
    assert any("/pcie@10000000 iommu-map" in w for w in what)
    assert not any("requester ID" in a for a in s["assumptions"])  # read, not assumed
    assert s["devices"]["0x100"] == ["0000:01:00.0 [1af4:1041] virtio-pci"]


def test_linux_612_layout_rebuilds_the_registers(tmp_path):
    """6.12 keeps {l1tab VA, l2ptrs VA, l1_dma, num_l1_ents}: found by the VA/PA pair, registers rebuilt."""
    from smmu_forensics.analysis import registers_of
    from smmu_forensics.discover.smmus import FoundSmmu

    img = MemoryImage()
    img.ram = [(0x40000000, 0x200000)]
    at = 0x40100000 + 0x80
    l1_dma = 0x40180000
    img.write(at - 8, struct.pack("<II", 0, 16))  # ssid_bits, sid_bits
    img.write(at, struct.pack("<QQQI", 0xFFFF000000000000 + (l1_dma - 0x40000000), 0xFFFF000000190000, l1_dma, 256))
    img.write(l1_dma + 8, struct.pack("<Q", 0x40190000 | 9))  # L1[1]: an L2 table, as Linux writes it
    write_elf(img, str(tmp_path / "d.elf"))  # synth's VMCOREINFO: VA_BITS 48, PHYS_OFFSET the RAM's start
    with open_dump(str(tmp_path / "d.elf")) as mem:
        (c,) = find_driver_copies(mem)
    assert (c.layout, c.addr, c.strtab_dma, c.num_l1_ents, c.sid_bits, c.strtab_base) == ("6.12", at, l1_dma, 256, 16, None)
    regs = registers_of(FoundSmmu("smmu0", copy=c, features=0x8305, coherent=True))
    assert regs is not None and (regs.get("strtab_base"), regs.get("strtab_base_cfg")) == (l1_dma | 1 << 62, 0x10210)


@needs_captures
def test_kallsyms_of_the_real_capture_decodes():
    """The kernel's own kallsyms tables, located by VMCOREINFO: _stext agrees with VMCOREINFO's
    SYMBOL(_stext); Debian 6.1 is built without CONFIG_KALLSYMS_ALL, so no data symbols."""
    from smmu_forensics.discover.symbols import Symbols

    with open_dump(str(CAPTURE / "mdf-l-d31.kdump")) as mem:
        syms = Symbols.from_kallsyms(mem)
        info = mem.vmcoreinfo()
    assert syms["_stext"] == int(info["SYMBOL(_stext)"], 16)
    assert syms.get("arm_smmu_device_probe") is not None and syms.get("iommu_device_list") is None
    assert len(syms.addrs) > 40000


@needs_captures
@pytest.mark.parametrize("dump", [CAPTURE / "mdf-l-d31.kdump", ACPI / "kdump-mdf-l-d31.kdump"], ids=lambda p: p.parent.name)
def test_swapper_pg_dir_walk_agrees_with_the_formulas(dump):
    """The kernel's own page tables (TTBR1, from SYMBOL(swapper_pg_dir)) translate an image address
    (prb) and a linear-map address (the driver's strtab VA) to what the VMCOREINFO formulas give
    and, for the table, to the strtab_dma the driver stored beside it."""
    from smmu_forensics.discover.kva import KernelVA

    with open_dump(str(dump)) as mem:
        info = mem.vmcoreinfo()
        k = KernelVA.from_vmcoreinfo(info)
        prb = int(info["SYMBOL(prb)"], 16)
        copy = find_driver_copies(mem)[0]
        assert k.walk(mem, prb) == k.pa(prb)
        assert k.walk(mem, copy.strtab_va) == k.pa(copy.strtab_va) == copy.strtab_dma

"""Discovery on dumps whose kernel structures synth wrote (``kernel:`` in a scenario): both driver
layouts, device tree and ACPI, several SMMUs, decoys, missing pages, lying firmware; and the shape
scan on the carved capture (tables and nothing else)."""

from __future__ import annotations

import copy
import json
import shutil
import struct

import pytest

from conftest import run_cli
from smmu_forensics.analysis import discover_registers
from smmu_forensics.discover.driver import scan
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.smmu.states import TableFormat
from smmu_forensics.synth.scenario import build_scenario
from smmu_forensics.synth.writers import DEFAULT_VMCOREINFO, write

PCI = [{"bdf": "0000:00:01.0", "vendor": "0x1af4", "device": "0x1042", "class": "0x010000", "driver": "virtio-pci", "group": 1},
       {"bdf": "0000:01:00.0", "vendor": "0x1af4", "device": "0x1041", "class": "0x020000", "driver": "virtio-pci", "group": 0}]
BASE = {
    "name": "kernel",
    "machine": {"ram": [{"start": "0x40000000", "size": "0x2000000"}]},
    "smmus": [
        {"name": "smmu0", "base": "0x9050000",
         "stream_table": {"format": "2lvl", "base": "0x40100000", "log2size": 16, "split": 8, "l2_base": "0x40200000",
                          "stes": [{"sid": "0x8", "preset": "bypass"}, {"sid": "0x100", "preset": "bypass"}]}},
        {"name": "smmu1", "base": "0x9070000", "registers": {"idr5": "0x75", "idr1": "0x02730011"},
         "stream_table": {"format": "2lvl", "base": "0x40600000", "log2size": 17, "split": 8, "l2_base": "0x40700000",
                          "stes": [{"sid": "0x200", "preset": "bypass"}]}},
    ],
    "kernel": {"layout": "6.1", "firmware": "dt", "pci": PCI},
}


def _dump(tmp_path, doc: dict, fmt: str = "elf", patch=None) -> tuple[str, list[dict]]:
    built = build_scenario(doc)
    if patch:
        patch(built.image)
    path = str(tmp_path / f"d.{fmt}")
    write(built.image, path, fmt, 1)
    with open(path + ".given.json", "w") as f:  # the true registers, under a name inspect does not pick up itself
        json.dump({"smmus": built.smmus}, f)
    return path, built.smmus


def _found(path: str):
    with open_dump(path) as mem:
        return discover_registers(mem)


def _given(smmus: list[dict]) -> list[tuple[int, int]]:
    return [(int(s["strtab_base"], 16), int(s["strtab_base_cfg"], 16)) for s in smmus]


@pytest.mark.parametrize("layout,firmware,fmt", [("6.1", "dt", "elf"), ("6.12", "dt", "kdump-zlib"), ("6.1", "acpi", "flat-elf"),
                                                 ("6.12", "acpi", "elf")])
def test_both_layouts_both_firmwares_several_smmus(tmp_path, layout, firmware, fmt):
    doc = copy.deepcopy(BASE)
    doc["kernel"].update(layout=layout, firmware=firmware)
    path, smmus = _dump(tmp_path, doc, fmt)
    d, regs, found = _found(path)
    assert [(r.values["strtab_base"], r.values["strtab_base_cfg"]) for r in regs] == _given(smmus)
    assert [s.base for s in found] == [0x9050000, 0x9070000]
    assert [s.copy.layout for s in found] == [layout, layout]
    assert all(any(e.source == "memory shape" and e.what.startswith("shape agrees") for e in s.evidence) for s in found)
    assert found[0].devices == {0x8: ["0000:00:01.0 [1af4:1042] virtio-pci"], 0x100: ["0000:01:00.0 [1af4:1041] virtio-pci"]}
    assert (d.iort is not None) == (firmware == "acpi") and (d.dt is not None) == (firmware == "dt")
    widths = [(r.values.get("idr5"), r.values.get("idr1")) for r in regs]
    assert widths[0][0] == 0x4 and widths[1][0] == 0x5  # OAS 44 and 48 bits, as the log and the copies say


def test_inspect_with_discovery_equals_inspect_with_the_registers(tmp_path):
    path, _ = _dump(tmp_path, BASE)
    side = path + ".given.json"
    p_given = run_cli("inspect", path, "--regs", side, "--format", "json", "--rules", "all")
    p_found = run_cli("inspect", path, "--format", "json", "--rules", "all")
    g, f = json.loads(p_given.stdout), json.loads(p_found.stdout)
    assert p_given.returncode == p_found.returncode
    for gs, fs in zip(g["smmus"], f["smmus"]):
        assert {k: (v["decision"], v["rule"]) for k, v in gs["verdicts"].items()} == \
               {k: (v["decision"], v["rule"]) for k, v in fs["verdicts"].items()}
        assert [s["raw"] for s in gs["table"]["stes"]] == [s["raw"] for s in fs["table"]["stes"]]
        assert fs["discovery"] and all(v["assumptions"] for v in fs["verdicts"].values())
    named = {s["sid"]: s.get("devices") for s in f["smmus"][0]["table"]["stes"]}
    assert named[8] == ["0000:00:01.0 [1af4:1042] virtio-pci"]


def test_no_driver_copy_falls_back_to_shape_and_decoys_lose(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["smmus"] = doc["smmus"][:1]
    doc["kernel"].update(layout="none", decoys=[{"base": "0x41000000", "l2_base": "0x41010000", "l1": [0]}])
    path, smmus = _dump(tmp_path, doc)
    d, regs, found = _found(path)
    assert [t.base for t in d.tables] == [0x40100000, 0x41000000]  # best first: 2 L1 descriptors beat the decoy's 1
    assert found[0].copy is None and found[0].table is not None
    assert (regs[0].values["strtab_base"], regs[0].values["strtab_base_cfg"]) == _given(smmus)[0]
    assert any("LOG2SIZE 16" in a for a in found[0].assumptions)
    out = run_cli("discover", path).stdout.decode()
    assert "table found by shape" in out and "0x41000000" in out  # every candidate listed


def test_a_missing_driver_copy_page_falls_back_to_shape(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["smmus"] = doc["smmus"][:1]
    with open_dump(_dump(tmp_path, doc)[0]) as mem:
        at = scan(mem).copies[0].addr
    doc["machine"]["excluded"] = [{"start": hex(at & ~0xFFF), "size": "0x1000"}]
    path, smmus = _dump(tmp_path, doc, "kdump-zlib")
    _, regs, found = _found(path)
    assert found[0].copy is None and found[0].table is not None
    assert (regs[0].values["strtab_base"], regs[0].values["strtab_base_cfg"]) == _given(smmus)[0]


def test_lying_firmware_is_a_note_not_a_traceback(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["kernel"]["firmware"] = "acpi"

    def bad_checksum(img):
        at = next(a for a in range(0x41F00000, 0x41F01000, 8) if img.read(a, 4) == b"IORT")
        img.write(at + 9, bytes([img.read(at + 9, 1)[0] ^ 0x55]))
        img.write(0x41E00000, struct.pack(">II", 0xD00DFEED, 0x7FFFFFFF) + bytes(32))  # an FDT magic whose size lies
        img.write(0x41E10000, struct.pack(">II", 0xD00DFEED, 0x100) + bytes(32))

    path, smmus = _dump(tmp_path, doc, patch=bad_checksum)
    d, regs, found = _found(path)
    assert d.iort is None and any("checksum" in n for n in d.notes)
    assert any("0x41e10000 rejected" in n for n in d.notes)
    assert [(r.values["strtab_base"], r.values["strtab_base_cfg"]) for r in regs] == _given(smmus)  # the log and the copies still stand
    assert any("StreamID = requester ID" in a for a in found[0].assumptions)  # no mapping read: said so


def test_no_log_several_tables_each_reported(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["kernel"].update(layout="none", log=False, firmware="none")
    path, smmus = _dump(tmp_path, doc)
    d, regs, found = _found(path)
    assert sorted((r.values["strtab_base"] & ~(0xFFF << 52)) for r in regs) == [0x40100000, 0x40600000]
    assert any("taken as the SMMUs" in n for n in d.notes)


def test_shape_scan_on_the_carved_capture(tmp_path, carved_truth):
    from conftest import CARVED

    dump = tmp_path / "c.elf"  # without its sidecar
    shutil.copy(CARVED, dump)
    with open_dump(str(dump)) as mem:
        tables = scan(mem).tables
    st = carved_truth["stream_table"]
    assert len(tables) == 1 and tables[0].fmt is TableFormat.TWO_LEVEL
    t = tables[0]
    assert t.base == int(st["strtab_base_addr"], 16) and t.log2size == st["log2size"]
    assert [(i, hex(a)) for i, a in t.l2] == [(e["index"], e["l2ptr"]) for e in st["l1_populated"]]
    p = run_cli("inspect", str(dump), "--format", "json", "--coherent", "--idr0", "0xd40101a")  # what no RAM dump holds
    m = json.loads(p.stdout)
    assert p.returncode == 0 and {v["decision"] for v in m["smmus"][0]["verdicts"].values()} == {"adopt"}
    listed = {s["sid"] for s in m["smmus"][0]["table"]["stes"]}
    assert listed == {int(k, 16) for k, v in st["stes"].items() if int(v["raw_qwords"][0], 16) != 1}  # every non-abort STE


def test_a_418_kernel_legacy_log_old_va_layout_pre510_struct(tmp_path):
    """RHEL 8 era (4.18): log_buf instead of the ring, the kernel VA layout before the 5.4 flip,
    the ASID bitmap still inside struct arm_smmu_device."""
    doc = copy.deepcopy(BASE)
    doc["kernel"].update(printk="legacy", va_layout="4.x", layout="pre-5.10")
    path, smmus = _dump(tmp_path, doc, "kdump-lzo")
    p = run_cli("dmesg", path)
    assert p.returncode == 0
    lines = p.stdout.decode().splitlines()
    assert lines[0] == "[    0.000001] arm-smmu-v3 9050000.smmuv3: ias 44-bit, oas 44-bit (features 0x00000301)"
    assert lines[-1].endswith("virtio-pci 0000:01:00.0: Adding to iommu group 0") and len(lines) == 6
    d, regs, found = _found(path)
    assert "pre-5.10" in d.log.source
    assert [(r.values["strtab_base"], r.values["strtab_base_cfg"]) for r in regs] == _given(smmus)
    assert [(s.copy.layout, s.copy.asid_bits, s.copy.vmid_bits, s.copy.ias) for s in found] == \
           [("pre-5.10", 16, 8, 44), ("pre-5.10", 16, 8, 48)]


@pytest.mark.parametrize("garbage", ["len-zero-twice", "len-past-end", "huge-size", "index-past-size"])
def test_a_garbage_legacy_log_is_bounded(tmp_path, garbage):
    doc = copy.deepcopy(BASE)
    doc["kernel"].update(printk="legacy")

    def spoil(img):
        info = {**DEFAULT_VMCOREINFO, **img.vmcoreinfo}
        voff = int(info["NUMBER(kimage_voffset)"], 16)
        var = (int(info["SYMBOL(log_buf)"], 16) - voff) & ((1 << 64) - 1)
        buf_va = struct.unpack("<Q", img.read(var, 8))[0]
        buf = buf_va - (-(1 << 48) & ((1 << 64) - 1)) + 0x40000000
        if garbage == "len-zero-twice":
            img.write(var + 12, struct.pack("<II", 16, 8))  # first 16 (record 2 is rewritten len 0), next 8: a loop
            img.write(buf + 16 + 8, struct.pack("<H", 0))
        elif garbage == "len-past-end":
            img.write(buf + 8, struct.pack("<H", 0xFFF8))
        elif garbage == "huge-size":
            img.write(var + 8, struct.pack("<I", 0xFFFFFFFF))
        else:
            img.write(var + 12, struct.pack("<I", 1 << 20))

    path, _ = _dump(tmp_path, doc, patch=spoil)
    p = run_cli("dmesg", path)
    assert p.returncode in (0, 4) and b"Traceback" not in p.stderr
    if p.returncode == 4:
        assert p.stderr.count(b"\n") == 1


def test_system_map_walks_the_drivers_list_and_names_each_copy(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["kernel"].update(layout="6.12", firmware="acpi", symbols=True)
    built = build_scenario(doc)
    path = str(tmp_path / "d.elf")
    from smmu_forensics.synth.scenario import write_outputs

    write_outputs(built, path, "elf")
    (tmp_path / "d.elf.smmu.json").unlink()
    without = run_cli("discover", path, "--format", "json")
    p = run_cli("discover", path, "--system-map", path + ".System.map", "--format", "json")
    assert p.returncode == without.returncode == 0
    m, m0 = json.loads(p.stdout), json.loads(without.stdout)
    for s in m["smmus"]:
        assert any(e["what"].startswith("registered on iommu_device_list") and repr(s["name"]) in e["what"] for e in s["evidence"])
        assert not any("by order" in a for a in s["assumptions"])
    assert all(any("by order" in a for a in s["assumptions"]) for s in m0["smmus"])  # without symbols: said so
    assert [s["registers"]["strtab_base"] for s in m["smmus"]] == [s["strtab_base"] for s in built.smmus]
    assert len(m["smmus"]) == 2  # the other IOMMU driver's node on the list is not an SMMUv3
    bad = tmp_path / "not-a-map"
    bad.write_bytes(b"hello\n")
    q = run_cli("discover", path, "--vmlinux", str(bad))
    assert q.returncode == 2 and q.stderr.count(b"\n") == 1 and b"no 'address type name' lines" in q.stderr


def test_a_decoy_with_more_descriptors_loses_to_the_table_the_devices_use(tmp_path):
    """Shape alone would pick the decoy (3 L1 descriptors against 2); the log's PCI devices (RIDs
    0x8 and 0x100: L1[0] and L1[1]) populate the real one, and that evidence ranks first."""
    doc = copy.deepcopy(BASE)
    doc["smmus"] = doc["smmus"][:1]
    doc["kernel"].update(layout="none", decoys=[{"base": "0x41000000", "l2_base": "0x41010000", "l1": [5, 6, 7]}])
    path, smmus = _dump(tmp_path, doc)
    d, regs, found = _found(path)
    assert d.tables[0].base == 0x41000000  # the best shape
    assert found[0].table.base == 0x40100000
    assert any("2 of the log's 2 PCI devices" in e.what for e in found[0].evidence)
    assert (regs[0].values["strtab_base"], regs[0].values["strtab_base_cfg"]) == _given(smmus)[0]


@pytest.mark.parametrize("fmt", ["elf", "kdump-zlib"])
def test_612_linear_table(tmp_path, fmt):
    """6.12's strtab_cfg.linear = { table, ste_dma, num_ents }: the registers are rebuilt as
    arm_smmu_write_strtab() builds them (FMT linear, LOG2SIZE sid_bits), shape agrees."""
    doc = copy.deepcopy(BASE)
    doc["smmus"] = [{"name": "smmu0", "base": "0x9050000", "registers": {"idr0": "0x0d40100a", "idr1": "0x02730008"},
                     "stream_table": {"format": "linear", "base": "0x40100000", "log2size": 8, "split": 0,  # Linux writes no SPLIT for a linear table
                                      "stes": [{"sid": "0x8", "preset": "bypass"}, {"sid": "0x10", "preset": "bypass"}]}}]
    doc["kernel"].update(layout="6.12")
    path, smmus = _dump(tmp_path, doc, fmt)
    d, regs, found = _found(path)
    assert [(r.values["strtab_base"], r.values["strtab_base_cfg"]) for r in regs] == _given(smmus)
    assert found[0].copy.layout == "6.12-linear" and found[0].copy.strtab_dma == 0x40100000
    assert any("linear table ste_dma 0x40100000, 256 STEs" in e.what for e in found[0].evidence)
    code = run_cli("inspect", path).returncode
    assert code == run_cli("inspect", path, "--regs", path + ".given.json").returncode

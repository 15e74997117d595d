"""dmesg: the crashed kernel's printk ring, checked against what the same kernel printed on its
serial console (an independent record of the same messages)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import CAPTURE, CARVED, SHARED, needs_captures, run_cli

LINE = re.compile(r"^\[ *\d+\.\d{6}\] .*")


def console_lines(path) -> list[str]:
    return [m.group(0).rstrip("\r") for m in map(LINE.match, path.read_text(errors="replace").splitlines()) if m]


@needs_captures
@pytest.mark.parametrize("name", ["mdf-c-d31.kdump", "mdf-l-d31.kdump", "qemu-kdump-zlib.flat"])
def test_dmesg_matches_the_serial_console(name):
    p = run_cli("dmesg", str(CAPTURE / name))
    assert p.returncode == 0, p.stderr
    got = p.stdout.decode().splitlines()
    want = console_lines(CAPTURE / "console.log")
    missing = [w for w in want if w not in set(got)]
    assert len(want) > 300 and not missing, missing[:5]  # every console line, timestamp to the microsecond
    assert "[    4.937587] arm-smmu-v3 9050000.smmuv3: ias 44-bit, oas 44-bit (features 0x00008305)" in got


@needs_captures
def test_dmesg_json_on_the_acpi_kdump_capture():
    cap = SHARED / "captures" / "acpi-kdump" / "kdump-mdf-l-d31.kdump"
    p = run_cli("dmesg", str(cap), "--format", "json")
    rep = json.loads(p.stdout)
    smmu = [r for r in rep["records"] if "features 0x00008305" in r["text"]]
    assert smmu and smmu[0]["device"] == "+platform:arm-smmu-v3.0.auto" and smmu[0]["subsystem"] == "platform"
    seqs = [r["seq"] for r in rep["records"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_dmesg_without_the_ring_is_exit_4():
    p = run_cli("dmesg", str(CARVED))
    assert p.returncode == 4 and p.stderr.count(b"\n") == 1 and b"kernel log not readable" in p.stderr


PRINTK_LAYOUT = {  # the capture's 6.1 VMCOREINFO entries for the ring (sizes and offsets)
    "OFFSET(printk_ringbuffer.desc_ring)": "0", "OFFSET(printk_ringbuffer.text_data_ring)": "48",
    "OFFSET(prb_desc_ring.count_bits)": "0", "OFFSET(prb_desc_ring.descs)": "8", "OFFSET(prb_desc_ring.infos)": "16",
    "OFFSET(prb_desc_ring.head_id)": "24", "OFFSET(prb_desc_ring.tail_id)": "32", "OFFSET(prb_data_ring.size_bits)": "0",
    "OFFSET(prb_data_ring.data)": "8", "SIZE(prb_desc)": "24", "SIZE(printk_info)": "88", "OFFSET(atomic_long_t.counter)": "0",
    "OFFSET(prb_desc.state_var)": "0", "OFFSET(prb_desc.text_blk_lpos)": "8", "OFFSET(prb_data_blk_lpos.begin)": "0",
    "OFFSET(prb_data_blk_lpos.next)": "8", "OFFSET(printk_info.seq)": "0", "OFFSET(printk_info.ts_nsec)": "8",
    "OFFSET(printk_info.text_len)": "16", "OFFSET(printk_info.dev_info)": "24", "OFFSET(dev_printk_info.subsystem)": "0",
    "OFFSET(dev_printk_info.device)": "16",
}


@pytest.mark.parametrize("garbage", ["random", "huge-ring", "pointer-out", "head-before-tail"])
def test_a_garbage_printk_ring_is_one_line_and_exit_4(tmp_path, garbage):
    import random
    import struct

    from smmu_forensics.synth.image import MemoryImage
    from smmu_forensics.synth.writers import write_elf

    img = MemoryImage()
    img.ram = [(0x40000000, 0x400000)]
    img.vmcoreinfo = {"SYMBOL(prb)": "ffff800008000000", **PRINTK_LAYOUT}  # pa = va - kimage_voffset = 0x40200000
    rnd = random.Random(garbage)
    img.write(0x40200000, struct.pack("<Q", 0xFFFF800008000100))  # prb -> the ring struct at 0x40200100
    ring = {
        "random": bytes(rnd.getrandbits(8) for _ in range(96)),
        "huge-ring": struct.pack("<QQQQQ", 40, 0, 0, 0, 0) + struct.pack("<QQ", 40, 0) + bytes(32),
        "pointer-out": struct.pack("<QQQQQ", 4, 0xFFFF00FFFFFF0000, 0xFFFF00FFFFFF0000, 5, 1) + struct.pack("<QQ", 10, 0) + bytes(32),
        "head-before-tail": struct.pack("<QQQQQ", 4, 0xFFFF000000210000, 0xFFFF000000210000, 1, 1 << 40)
        + struct.pack("<QQ", 10, 0xFFFF000000210000) + bytes(32),
    }[garbage]
    img.write(0x40200100, ring)
    write_elf(img, str(tmp_path / "g.elf"))
    p = run_cli("dmesg", str(tmp_path / "g.elf"))
    assert p.returncode == 4 and p.stderr.count(b"\n") == 1 and b"Traceback" not in p.stderr, p.stderr

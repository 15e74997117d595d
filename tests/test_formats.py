"""Format corners: ELF32, DISKDUMP signature, the INCOMPLETE flag, old header versions, 16 KiB
pages, TOML scenarios, raw files given as several parts."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from conftest import SCENARIOS, run_cli
from smmu_forensics.dumps.base import PageState
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.synth.scenario import build_scenario, load, write_outputs


@pytest.fixture(scope="module")
def kdump(tmp_path_factory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("fmt")
    built = build_scenario(load(str(SCENARIOS / "adopt-2lvl.yaml")))
    out = d / "a.kdump"
    write_outputs(built, str(out), "kdump-zlib")
    return out, built


def test_elf32_core(tmp_path):
    """An ELF32 core (arm32/i386 vmcores), written by hand: one PT_NOTE, one PT_LOAD."""
    data = bytes(range(256)) * 16  # 4 KiB
    phoff, n = 52, 2
    off = 0x1000
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIIIIIHHHHHH", 4, 40, 1, 0, phoff, 0, 0, 52, 32, n, 0, 0, 0)
    ph_note = struct.pack("<IIIIIIII", 4, 0, 0x200, 0, 0, 0, 0, 0)
    ph_load = struct.pack("<IIIIIIII", 1, off, 0x80001000, 0x80001000, len(data), len(data) * 2, 7, 0x1000)
    blob = bytearray(ehdr + ph_note + ph_load)
    blob += bytes(off - len(blob)) + data
    (tmp_path / "c32").write_bytes(bytes(blob))
    with open_dump(str(tmp_path / "c32")) as mem:
        assert mem.format_name == "elf32"
        assert mem.read(0x80001010, 4) == bytes([16, 17, 18, 19])
        assert mem.page_state(0x80002000) is PageState.EXCLUDED  # p_filesz < p_memsz


def test_diskdump_signature_and_incomplete_flag(kdump, tmp_path):
    out, built = kdump
    b = bytearray(out.read_bytes())
    b[0:8] = b"DISKDUMP"
    struct.pack_into("<I", b, 424, struct.unpack_from("<I", b, 424)[0] | 0x8)  # DUMP_DH_COMPRESSED_INCOMPLETE
    (tmp_path / "dd").write_bytes(bytes(b))
    with open_dump(str(tmp_path / "dd")) as mem:
        inf = mem.info()
        assert inf.incomplete and "DUMP_DH_COMPRESSED_INCOMPLETE" in inf.incomplete_reasons[0]
        assert mem.read(0x40100000, 0x800) == built.image.read(0x40100000, 0x800)


def test_header_version_5_uses_32bit_max_mapnr(kdump, tmp_path):
    out, built = kdump
    b = bytearray(out.read_bytes())
    struct.pack_into("<i", b, 8, 5)
    struct.pack_into("<Q", b, 4096 + 96, 0)  # max_mapnr_64 is not there before version 6
    (tmp_path / "v5").write_bytes(bytes(b))
    with open_dump(str(tmp_path / "v5")) as mem:
        assert mem.info().details["header_version"] == 5
        assert mem.read(0x40200000, 0x4000) == built.image.read(0x40200000, 0x4000)


def test_zero_pages_share_one_descriptor(kdump):
    out, _ = kdump
    with open_dump(str(out)) as mem:
        assert mem.page_state(0x41F00000) is PageState.ZERO
        assert mem.read(0x41F00000, 16) == bytes(16)
        assert mem.page_state(0x40100000) is PageState.PRESENT


def test_16k_pages_and_toml(tmp_path):
    toml = """
name = "toml-16k"
[machine]
page_size = 16384
ram = [{start = "0x40000000", size = "0x2000000"}]
[[smmus]]
name = "smmu0"
base = "0x9050000"
[smmus.stream_table]
format = "2lvl"
base = "0x40100000"
log2size = 16
l2_base = "0x40200000"
stes = [{sid = "0x8", preset = "bypass"}]
[expect]
latest = {decision = "adopt"}
"""
    (tmp_path / "s.toml").write_text(toml)
    out = tmp_path / "s.kdump"
    p = run_cli("synth", str(tmp_path / "s.toml"), "-o", str(out), "--format", "kdump-zstd")
    assert p.returncode == 0, p.stderr
    with open_dump(str(out)) as mem:
        assert mem.page_size == 16384
    p = run_cli("inspect", str(out), "--format", "json")
    assert p.returncode == 0 and b"DMA-BYPASS" in p.stdout


def test_several_raw_parts(kdump, tmp_path):
    _, built = kdump
    a = built.image.read(0x40000000, 0x200000)
    b = built.image.read(0x40200000, 0x200000)
    (tmp_path / "lo.bin").write_bytes(a)
    (tmp_path / "hi.bin").write_bytes(b)
    spec = f"{tmp_path / 'lo.bin'}@0x40000000,{tmp_path / 'hi.bin'}@0x40200000"
    with open_dump(spec) as mem:
        assert mem.read(0x401FFFF0, 32) == built.image.read(0x401FFFF0, 32)
        assert mem.page_state(0x40400000) is PageState.ABSENT


def test_lime_padded_is_raw_at_zero(tmp_path):
    (tmp_path / "pad.lime").write_bytes(bytes(0x1000) + b"\x11" * 0x1000)
    with open_dump(f"{tmp_path / 'pad.lime'}@0") as mem:
        assert mem.read(0x1000, 4) == b"\x11" * 4


def test_truncated_elf_segment_runs(tmp_path):
    """A segment cut by the end of the file: present, then lost up to p_filesz, then excluded."""
    data = b"\xab" * 0x3000
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 183, 1, 0, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 7, 0x1000, 0x40000000, 0x40000000, 0x4000, 0x6000, 0x1000)
    blob = ehdr + ph
    blob += bytes(0x1000 - len(blob)) + data  # the file holds 0x3000 of the 0x4000 p_filesz bytes
    (tmp_path / "cut.elf").write_bytes(blob)
    with open_dump(str(tmp_path / "cut.elf")) as mem:
        assert [(hex(r.start), hex(r.end), r.state.value) for r in mem.ranges()] == [
            ("0x40000000", "0x40003000", "present"), ("0x40003000", "0x40004000", "lost"), ("0x40004000", "0x40006000", "excluded")]
        assert mem.read(0x40002FF0, 16) == b"\xab" * 16
        r = mem.read_partial(0x40002FF0, 0x2000)
        assert [(h.state.value, hex(h.start), hex(h.end)) for h in r.holes] == [("lost", "0x40003000", "0x40004000"),
                                                                                ("excluded", "0x40004000", "0x40004ff0")]
        assert mem.info().incomplete


def test_kernel_text_segment_overlapping_ram(tmp_path):
    """/proc/vmcore's first PT_LOAD maps the kernel image, which a RAM PT_LOAD covers again."""
    ram = bytes(range(256)) * 64  # 16 KiB at 0x40000000
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 183, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    text = struct.pack("<IIQQQQQQ", 1, 7, 0x1000 + 0x1000, 0xFFFF800008000000, 0x40001000, 0x2000, 0x2000, 0x1000)
    full = struct.pack("<IIQQQQQQ", 1, 7, 0x1000, 0xFFFF000000000000, 0x40000000, len(ram), len(ram), 0x1000)
    blob = ehdr + text + full
    (tmp_path / "vmcore").write_bytes(blob + bytes(0x1000 - len(blob)) + ram)
    with open_dump(str(tmp_path / "vmcore")) as mem:
        assert [(r.start, r.end) for r in mem.ranges()] == [(0x40000000, 0x40004000)]
        assert mem.read(0x40000FF0, 0x2020) == ram[0xFF0:0x3010]

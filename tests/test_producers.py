"""Real producers: makedumpfile writes kdump, flattened, split and -E files from the carved real
capture, and we read the same bytes; drgn (libkdumpfile) reads what synth writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import CARVED, SCENARIOS, needs_makedumpfile
from smmu_forensics.dumps.base import PageState
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.synth.image import MemoryImage
from smmu_forensics.synth.scenario import build_scenario, load, write_outputs
from smmu_forensics.synth.writers import write_elf


@pytest.fixture(scope="module")
def noteless_elf(tmp_path_factory) -> tuple[Path, dict[int, bytes]]:
    """The carved capture as an ELF without VMCOREINFO (so the x86 makedumpfile accepts it)."""
    d = tmp_path_factory.mktemp("mdf")
    img = MemoryImage()
    truth: dict[int, bytes] = {}
    with open_dump(str(CARVED)) as mem:
        for r in mem.ranges():
            data = mem.read(r.start, r.size)
            img.ram.append((r.start, r.size))
            img.write(r.start, data)
            truth[r.start] = data
    out = d / "carved-noteless.elf"
    write_elf(img, str(out), with_vmcoreinfo=False)
    return out, truth


def mdf(*args: str) -> None:
    p = subprocess.run(["makedumpfile", *args], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-500:]


def same_bytes(spec: str, truth: dict[int, bytes]) -> None:
    with open_dump(spec) as mem:
        for start, data in truth.items():
            r = mem.read_partial(start, len(data))
            for h in r.holes:  # only pages makedumpfile excluded may be missing, and they are zero pages
                assert h.state in (PageState.EXCLUDED,), h
                assert not any(data[h.start - start : h.end - start])
            got = bytearray(r.data)
            assert bytes(got) == data, (spec, hex(start))


@needs_makedumpfile
@pytest.mark.parametrize("opts", [["-c", "-d", "0"], ["-l", "-d", "1"], ["-c", "-d", "1"], ["-d", "0"]])
def test_makedumpfile_kdump(noteless_elf, tmp_path, opts):
    elf, truth = noteless_elf
    out = tmp_path / "out.kdump"
    mdf(*opts, str(elf), str(out))
    same_bytes(str(out), truth)
    with open_dump(str(out)) as mem:
        inf = mem.info()
        assert inf.format == "kdump" and inf.page_size == 4096 and not inf.incomplete
        assert inf.codec == {"-c": "zlib", "-l": "lzo"}.get(opts[0], "none")


@needs_makedumpfile
def test_makedumpfile_flattened(noteless_elf, tmp_path):
    elf, truth = noteless_elf
    out = tmp_path / "out.flat"
    with open(out, "wb") as f:
        p = subprocess.run(["makedumpfile", "-F", "-c", "-d", "1", str(elf)], stdout=f, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-300:]
    same_bytes(str(out), truth)
    with open_dump(str(out)) as mem:
        assert mem.format_name == "flattened+kdump"
    # and makedumpfile -R of it gives the same answer
    rebuilt = tmp_path / "rebuilt.kdump"
    with open(out, "rb") as f:
        subprocess.run(["makedumpfile", "-R", str(rebuilt)], stdin=f, capture_output=True, timeout=120, check=True)
    same_bytes(str(rebuilt), truth)


@needs_makedumpfile
def test_makedumpfile_split(noteless_elf, tmp_path):
    elf, truth = noteless_elf
    a, b = tmp_path / "p1.kdump", tmp_path / "p2.kdump"
    mdf("--split", "-c", "-d", "0", str(elf), str(a), str(b))
    same_bytes(f"{a},{b}", truth)
    with open_dump(f"{a},{b}") as mem:
        assert mem.info().details["split_parts"] == 2


@needs_makedumpfile
def test_makedumpfile_elf_filtered(noteless_elf, tmp_path):
    elf, truth = noteless_elf
    out = tmp_path / "out-E.elf"
    mdf("-E", "-d", "1", str(elf), str(out))
    same_bytes(str(out), truth)


@needs_makedumpfile
def test_makedumpfile_reads_what_synth_wrote(tmp_path):
    """makedumpfile -R accepts synth's flattened output and gives back the kdump synth meant."""
    built = build_scenario(load(str(SCENARIOS / "adopt-2lvl.yaml")))
    write_outputs(built, str(tmp_path / "s.flat"), "flat-zlib")
    with open(tmp_path / "s.flat", "rb") as f:
        subprocess.run(["makedumpfile", "-R", str(tmp_path / "s.kdump")], stdin=f, capture_output=True, timeout=60, check=True)
    with open_dump(str(tmp_path / "s.kdump")) as m1, open_dump(str(tmp_path / "s.flat")) as m2:
        assert m1.read(0x40100000, 0x800) == m2.read(0x40100000, 0x800)
        assert m1.read(0x40200000, 0x4000) == m2.read(0x40200000, 0x4000)


@pytest.mark.parametrize("fmt", ["kdump-zlib", "kdump-lzo", "kdump-snappy", "kdump-zstd", "kdump-none", "flat-zlib", "elf"])
def test_independent_reader_agrees_with_synth(fmt, tmp_path):
    drgn = pytest.importorskip("drgn")
    for name in ("adopt-2lvl", "pages-64k"):
        built = build_scenario(load(str(SCENARIOS / f"{name}.yaml")))
        out = tmp_path / f"{name}.{fmt}"
        write_outputs(built, str(out), fmt)
        prog = drgn.Program()
        prog.set_core_dump(str(out))
        with open_dump(str(out)) as mem:
            for addr, n in ((0x40100000, 0x800), (0x40200000, 0x8000), (0x40300000, 0x80), (0x40400000, 0x1000)):
                assert prog.read(addr, n, True) == mem.read(addr, n) == built.image.read(addr, n), (fmt, hex(addr))

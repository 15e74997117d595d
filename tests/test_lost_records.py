"""Never invent memory: a flattened stream that lost a record (and its end marker) makes what the
record carried `lost`, in every reader and command: info says incomplete, xp exits 4, inspect does
not adopt on zeros and keeps or marks the findings the missing bytes held."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import SCENARIOS, cli_json, run_cli
from smmu_forensics.dumps.flattened import FLAT_HEADER_SIZE

L2 = 0x40200000  # dma-writes-l2.yaml: L1[0]'s L2 table


def records(blob: bytes):
    pos = FLAT_HEADER_SIZE
    while pos + 16 <= len(blob):
        off, n = struct.unpack_from(">qq", blob, pos)
        if off == -1:
            return
        yield pos, off, n
        pos += 16 + n


def drop_record_holding(path, needle: bytes, out, cut_end: bool) -> None:
    blob = path.read_bytes()
    keep = bytearray(blob[:FLAT_HEADER_SIZE])
    dropped = 0
    for pos, _off, n in records(blob):
        rec = blob[pos : pos + 16 + n]
        if needle in rec[16:]:
            dropped += 1
            continue
        keep += rec
    assert dropped == 1
    if not cut_end:
        keep += struct.pack(">qq", -1, -1)
    out.write_bytes(bytes(keep))


@pytest.mark.parametrize("fmt", ["flat-elf", "flat-zlib", "flat-none"])
@pytest.mark.parametrize("cut_end", [True, False])
def test_missing_record_is_lost_not_zero(tmp_path, fmt, cut_end):
    good = tmp_path / "good"
    p = run_cli("synth", str(SCENARIOS / "dma-writes-l2.yaml"), "-o", str(good), "--format", fmt)
    assert p.returncode == 0, p.stderr
    code, rep = cli_json("inspect", str(good))
    assert code == 1 or code == 0
    assert any(f["id"].startswith("DMA-WRITES") for f in rep["smmus"][0]["findings"])
    # the STE of SID 0x8 (first bytes of the valid STEs in L2) identifies the record carrying L2
    raw = run_cli("xp", str(good), hex(L2 + 8 * 64), "--len", "64", "--format", "raw").stdout
    needle = raw if fmt != "flat-zlib" else None
    bad = tmp_path / "bad"
    if needle is None:  # compressed pages: drop the record that holds the compressed L2 page instead
        import zlib

        blob = good.read_bytes()
        page = run_cli("xp", str(good), hex(L2), "--len", "4096", "--format", "raw").stdout
        needle = zlib.compress(page)[2:40]
        if needle not in blob:
            needle = next(zlib.compress(page, lv)[2:40] for lv in range(10) if zlib.compress(page, lv)[2:40] in blob)
    drop_record_holding(good, needle, bad, cut_end)
    bad.with_name("bad.smmu.json").write_text((good.parent / "good.smmu.json").read_text())

    code, inf = cli_json("info", str(bad))
    assert code == 0 and inf["incomplete"] is True and inf["incomplete_reasons"]
    p = run_cli("xp", str(bad), hex(L2 + 8 * 64), "--len", "64")
    assert p.returncode == 4 and b"lost" in p.stdout + p.stderr
    p = run_cli("inspect", str(bad), "--format", "json")
    rep = json.loads(p.stdout)
    s = rep["smmus"][0]
    assert p.returncode == 4  # never "adopt" on bytes nobody wrote: latest scans the STEs, so it cannot know
    assert s["verdicts"]["latest"]["decision"] == "unknown"  # (v6 reads only the L1 descriptors: it may still decide)
    assert any(f["id"] in ("MEM-L1-MISSING", "MEM-L2-MISSING") and "lost" in f["message"] for f in s["findings"])
    assert not any(e["config"] == "abort" and e["addr"] == hex(L2) for e in s["table"]["stes"])  # no invented STEs


def test_missing_bitmap_record_is_lost_not_excluded(tmp_path):
    """A flattened kdump whose 2nd-bitmap record never arrived: its pages are lost, not 'excluded by
    makedumpfile' (a clear bit nobody wrote says nothing)."""
    from smmu_forensics.dumps.kdump import KdumpMemory
    from smmu_forensics.dumps.sniff import open_dump
    from smmu_forensics.synth.writers import flatten

    kd = tmp_path / "d.kdump"
    assert run_cli("synth", str(SCENARIOS / "adopt-2lvl.yaml"), "-o", str(kd), "--format", "kdump-zlib").returncode == 0
    with open_dump(str(kd)) as mem:
        assert isinstance(mem, KdumpMemory)
        b2 = mem.parts[0].bitmap2.offset
    flat = tmp_path / "d.flat"
    flatten(str(kd), str(flat), chunk=4096)
    blob = flat.read_bytes()
    keep = bytearray(blob[:FLAT_HEADER_SIZE])
    for pos, off, n in records(blob):
        if not (off <= b2 < off + n):
            keep += blob[pos : pos + 16 + n]
    keep += struct.pack(">qq", -1, -1)
    bad = tmp_path / "bad.flat"
    bad.write_bytes(bytes(keep))
    code, inf = cli_json("info", str(bad))
    assert inf["incomplete"] is True and inf["summary"]["by_state"].get("lost", {}).get("bytes", 0) > 0
    p = run_cli("xp", str(bad), hex(L2), "--len", "64")
    assert p.returncode == 4 and b"bitmap" in p.stdout + p.stderr and b"excluded" not in p.stdout

"""The real captures: every format reads the ground truth's bytes; inspect reports the ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import CAPTURE, capture_files, cli_json, needs_captures
from smmu_forensics.dumps.base import PageState
from smmu_forensics.dumps.sniff import open_dump

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "smmu_forensics/report/schema.json").read_text())
pytestmark = needs_captures


def all_dumps(elf: Path) -> list[str]:
    return [str(p) for p in capture_files()] + [str(elf)]


def test_every_format_reads_ground_truth_bytes(truth, elf_capture):
    st = truth["stream_table"]
    for path in all_dumps(elf_capture):
        with open_dump(path) as mem:
            for sid, ste in st["stes"].items():
                assert mem.read(int(ste["ste_pa"], 16), 64).hex() == ste["raw_hex"], (path, sid)
                if "cd" in ste:
                    raw = b"".join(int(q, 16).to_bytes(8, "little") for q in ste["cd"]["raw_qwords"])
                    assert mem.read(int(ste["cd"]["pa"], 16), 64) == raw, (path, sid)
            base = int(st["strtab_base_addr"], 16)
            for e in st["l1_populated"]:
                assert int.from_bytes(mem.read(base + 8 * e["index"], 8), "little") == int(e["raw"], 16)


def test_same_bytes_from_every_format(truth, elf_capture):
    """One set of addresses, every format: identical bytes (page tables, tables, page-crossing reads)."""
    addrs = [(0x431BE000, 2048), (0x7AC60000, 0x8000), (0x7AC5FFF0, 64), (0x4820E000, 4096), (0x482C9000, 4096),
             (0x48323000, 64), (0x431CD000, 64)]
    addrs += [(int(t["pa"], 16), 4096) for pt in truth["io_pgtables"].values() for t in pt["tables"]]
    ref = None
    for path in all_dumps(elf_capture):
        with open_dump(path) as mem:
            got = [mem.read_partial(a, n) for a, n in addrs]
        blob = [(r.data, [(h.start, h.end) for h in r.holes]) for r in got]
        if ref is None:
            ref = blob
        for (a, _n), (x, hx), (y, hy) in zip(addrs, ref, blob):
            if not hx and not hy:
                assert x == y, (path, hex(a))


@pytest.mark.parametrize("name,fmt,codec,page", [
    ("mdf-c-d31.kdump", "kdump", "zlib", 4096),
    ("mdf-l-d31.kdump", "kdump", "lzo", 4096),
    ("qemu-kdump-zlib.flat", "flattened+kdump", "zlib", 65536),
])
def test_info_kdump(name, fmt, codec, page):
    with open_dump(str(CAPTURE / name)) as mem:
        inf = mem.info()
    assert (inf.format, inf.codec, inf.page_size) == (fmt, codec, page)
    assert inf.vmcoreinfo["OSRELEASE"] == "6.1.0-56-arm64"
    assert not inf.incomplete
    total = sum(v for v in inf.pages.values() if v)
    assert total * page == 1 << 30  # 1 GiB of guest RAM, every page accounted for
    if name.startswith("mdf"):
        assert inf.pages == {"excluded": 243399, "zero": 3183, "lost": 0, "present": 15562}
        assert inf.ranges[0].start == 0x40000000 and inf.ranges[0].state is PageState.EXCLUDED


def test_info_elf_and_excluded_page_is_typed(elf_capture):
    with open_dump(str(elf_capture)) as mem:
        inf = mem.info()
        assert inf.format == "elf64" and inf.details["producer"].startswith("QEMU")
        assert [(r.start, r.end) for r in inf.ranges] == [(0x40000000, 0x80000000)]
        assert mem.page_state(0x3FFFF000) is PageState.ABSENT
    with open_dump(str(CAPTURE / "mdf-c-d31.kdump")) as mem:
        r = mem.read_partial(0x40000000, 16)
        assert r.holes[0].state is PageState.EXCLUDED and r.holes[0].reason.startswith("excluded by makedumpfile")


@pytest.mark.parametrize("dump", ["mdf-c-d31.kdump", "mdf-l-d31.kdump", "qemu-kdump-zlib.flat", "ELF"])
def test_inspect_capture_matches_ground_truth(truth, elf_capture, dump):
    path = str(elf_capture) if dump == "ELF" else str(CAPTURE / dump)
    code, rep = cli_json("inspect", path, "--regs", str(CAPTURE / "registers.json"), "--rules", "all", "--all")
    jsonschema.validate(rep, SCHEMA)
    assert code == 0 and rep["exit_code"] == 0
    s = rep["smmus"][0]
    st = truth["stream_table"]
    t = s["table"]
    assert (t["format"], t["base"], t["log2size"], t["split"]) == ("2lvl", "0x431be000", 16, 8)
    assert [(e["index"], e["raw"], e["span"], e["l2ptr"]) for e in t["l1"]] == [
        (e["index"], hex(int(e["raw"], 16)), e["span"], e["l2ptr"]) for e in st["l1_populated"]]
    stes = {e["sid"]: e for e in t["stes"]}
    assert len(stes) == 512
    names = {"abort": "abort", "s1_trans": "s1"}
    for sid, ste in st["stes"].items():
        e = stes[int(sid, 16)]
        assert e["raw"] == ste["raw_hex"] and e["config"] == names[ste["decoded"]["config"]] and e["valid"]
    assert t["ste_summary"]["by_config"] == {"abort": 509, "s1": 3}
    for rs in ("v6", "v7", "latest"):
        v = s["verdicts"][rs]
        assert (v["decision"], v["rule"], v["errno"]) == ("adopt", None, None)
        assert [(r["index"], r["result"]) for r in v["l1"]] == [(0, "accept"), (1, "accept")]
    assert s["findings"] == []
    reach = {r["ttb0"]: r for r in s["dma"]}
    for root, pt in truth["io_pgtables"].items():
        assert reach[root]["n_leaves"] == pt["n_leaves"]
        assert [t_["pa"] for t_ in reach[root]["tables"]] == [t_["pa"] for t_ in sorted(pt["tables"], key=lambda x: (x["level"], x["pa"]))]


def test_xp_raw_matches(truth):
    from conftest import run_cli

    ste = truth["stream_table"]["stes"]["0x8"]
    p = run_cli("xp", str(CAPTURE / "qemu-kdump-zlib.flat"), ste["ste_pa"], "--len", "64", "--format", "raw")
    assert p.returncode == 0 and p.stdout.hex() == ste["raw_hex"]

"""`smmu-forensics dma`: complete merged listings equal the captures' ground truth leaf for leaf;
one IOVA's translation level by level; who reaches a physical page."""

from __future__ import annotations

import json

import pytest

from conftest import CAPTURE, FIXTURES, SHARED, cli_json, have_captures, run_cli
from smmu_forensics.smmu.dmamap import merge
from smmu_forensics.smmu.pgtable import Leaf

ACPI = SHARED / "captures" / "acpi-kdump"
CARVED = str(FIXTURES / "qemu-panic-carved.elf")


def pages_of_ranges(ranges: list[dict]) -> dict[int, tuple[int, bool]]:
    out = {}
    for r in ranges:
        iova, pa, ps = int(r["iova"], 16), int(r["pa"], 16), r["page_size"]
        assert int(r["iova_end"], 16) == iova + r["size"] - 1 and r["size"] == ps * r["pages"]
        for k in range(r["size"] // 4096):
            out[iova + 4096 * k] = (pa + 4096 * k, r["writable"])
    return out


def pages_of_truth(pt: dict) -> dict[int, tuple[int, bool]]:
    out = {}
    for lf in pt["leaves"]:
        iova, pa, size = int(lf["iova"], 16), int(lf["pa"], 16), lf["size"]
        w = not (int(lf["pte"], 16) >> 7) & 1  # stage 1: AP[2] clear = writable
        for k in range(size // 4096):
            out[iova + 4096 * k] = (pa + 4096 * k, w)
    return out


@pytest.mark.skipif(not have_captures(), reason="needs ../shared/captures")
@pytest.mark.parametrize("folder,dump", [(CAPTURE, "mdf-c-d31.kdump"), (ACPI, "kdump-mdf-l-d31.kdump")])
def test_listing_equals_ground_truth(folder, dump):
    """No register file: the SMMU and its tables are found in the dump, and the complete listing
    (319 mappings in one qemu-panic table, far past inspect's 32) is exactly the ground truth."""
    truth = json.loads((folder / "ground_truth.json").read_text())
    code, m = cli_json("dma", str(folder / dump), "--format", "json")
    assert code == 0 and not m["incomplete"]
    got = {c["ttb"]: c for c in m["contexts"]}
    assert set(got) == set(truth["io_pgtables"])
    for root, pt in truth["io_pgtables"].items():
        c = got[root]
        assert c["complete"] and c["n_leaves"] == pt["n_leaves"]
        assert sorted(c["sids"]) == sorted(pt["used_by_sids"]) and c["asid"] == pt["asid"]
        assert pages_of_ranges(c["ranges"]) == pages_of_truth(pt)
        assert sum(r["pages"] for r in c["ranges"]) == pt["n_leaves"]


@pytest.mark.skipif(not have_captures(), reason="needs ../shared/captures")
def test_iova_and_pa_on_the_capture():
    """Every ground-truth leaf of SID 0x8 translates to its PA through the same table pages, and
    its PA is reached by exactly that SID and IOVA."""
    truth = json.loads((CAPTURE / "ground_truth.json").read_text())
    pt = next(p for p in truth["io_pgtables"].values() if p["used_by_sids"] == ["0x8"])
    tables = {t["pa"] for t in pt["tables"]}
    dump, regs = str(CAPTURE / "mdf-c-d31.kdump"), str(CAPTURE / "registers.json")
    for lf in pt["leaves"][1:2]:
        code, m = cli_json("dma", dump, "--regs", regs, "--sid", "8", "--iova", hex(int(lf["iova"], 16) + 0x123), "--format", "json")
        assert code == 0
        (c,) = m["contexts"]
        t = c["translation"]
        assert t["pa"] == hex(int(lf["pa"], 16) + 0x123) and t["size"] == 4096
        assert [s["level"] for s in t["steps"]] == [0, 1, 2, 3] and {s["table"] for s in t["steps"]} <= tables
        assert t["steps"][-1]["desc"] == lf["pte"] and t["steps"][-1]["kind"] == "page"
        code, m = cli_json("dma", dump, "--regs", regs, "--pa", lf["pa"], "--format", "json")
        assert code == 0
        hits = [(h["sids"], h["iova"]) for h in m["reaching"]]
        assert (["0x8"], lf["iova"]) in hits


def test_translation_text_and_fault():
    p = run_cli("dma", CARVED, "--sid", "8", "--iova", "0xffffa123")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "L3 0x482f3000[506] @ 0x482f3fd0 = 0x431cff47 (page)" in out
    assert "IOVA 0xffffa123 -> PA 0x431cf123 (4K page, writable)" in out
    code, m = cli_json("dma", CARVED, "--sid", "8", "--iova", "0x1000", "--format", "json")
    t = m["contexts"][0]["translation"]
    assert code == 0 and t["pa"] is None and "invalid" in t["fault"]
    code, m = cli_json("dma", CARVED, "--sid", "8", "--iova", hex(1 << 50), "--format", "json")
    assert m["contexts"][0]["translation"]["fault"].endswith("48-bit input size: translation fault")


def test_sid_states_and_usage():
    code, m = cli_json("dma", CARVED, "--sid", "0", "--format", "json")  # an abort STE
    assert code == 0 and m["contexts"] == [] and m["stes"][0]["config"] == "abort"
    p = run_cli("dma", CARVED, "--sid", "0x7fff0")
    assert p.returncode == 2 and b"no STE" in p.stderr
    p = run_cli("dma", CARVED, "--pa", "0x431cf000", "--format", "markdown")
    assert p.returncode == 0 and p.stdout.startswith(b"### DMA: PA 0x431cf000") and b"IOVA 0xffffa000 writable" in p.stdout


def test_merge_keeps_every_page():
    leaves = [Leaf(0x1000 * i, 0x80000 + 0x1000 * (i if i != 5 else 9), 4096, 3, i != 7) for i in range(12)]
    ranges = merge(leaves)
    assert [(r.iova, r.pages) for r in ranges] == [(0, 5), (0x5000, 1), (0x6000, 1), (0x7000, 1), (0x8000, 4)]
    assert sum(r.pages for r in ranges) == len(leaves)

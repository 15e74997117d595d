"""latest's ASID/VMID scan reports the kernel's first failure: SID order, then per STE Config,
VMID, CD-table geometry, then the table's L1CDs and CDs (issue 8).  Every ordered pair of scan
rules is put on two SIDs, in both orders; the rule reported must be the earlier SID's."""

from __future__ import annotations

import itertools

import pytest

from smmu_forensics.analysis import analyze
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.rules.scan import RULES
from smmu_forensics.smmu.registers import load_register_file
from smmu_forensics.synth.scenario import build_scenario, write_outputs

PGT = "0x40400000"
IDR0_CD2L = 0x0D48101B  # S2P, S1P, COHACC, ASID16, CD2L, 2-level
IDR0_NO_CD2L = 0x0D40101B
IDR1 = 0x027302D0  # SIDSIZE 16, SSIDSIZE 11


def _failure(rule: str, sid: int, base: int) -> tuple[dict, list[dict]]:
    """An STE at ``sid`` failing ``rule``, with its CD tables placed at ``base``."""
    h = lambda a: hex(a)  # noqa: E731
    ok_cd = [{"ssid": 0, "asid": 7, "ttb0": PGT}]
    l2cd = {"addr": h(base + 0x10000), "format": "64k_l2", "cds": [{"ssid": 0, "asid": 5, "ttb0": PGT}]}
    s1_l2 = {"sid": h(sid), "preset": "s1", "cd": h(base + 0x10000), "cdmax": 11, "cd_format": "64k_l2"}
    return {
        "SCAN-STE-CFG": ({"sid": h(sid), "preset": "abort", "fields": {"CONFIG": 2}}, []),
        "SCAN-VMID": ({"sid": h(sid), "preset": "s2", "vmid": 0, "s2ttb": h(base + 0x80000)}, []),
        "SCAN-CDTAB-NULL": ({"sid": h(sid), "preset": "s1"}, []),
        "SCAN-CDTAB-CDMAX": ({"sid": h(sid), "preset": "s1", "cd": h(base), "cdmax": 12}, []),
        "SCAN-CDTAB-FMT": ({"sid": h(sid), "preset": "s1", "cd": h(base), "fields": {"S1FMT": 1}}, [{"addr": h(base), "cds": ok_cd}]),
        "SCAN-CDTAB-CD2L": (s1_l2, [{**l2cd, "l1": [{"index": 0, "l2ptr": h(base + 0x20000)}]}]),
        "SCAN-CDTAB-ALIGN": ({"sid": h(sid), "preset": "s1", "cd": h(base + 0x40), "cdmax": 1}, [{"addr": h(base + 0x40), "cds": ok_cd}]),
        "SCAN-CD-ASID": ({"sid": h(sid), "preset": "s1", "cd": h(base)}, [{"addr": h(base), "cds": [{"ssid": 0, "asid": 0, "ttb0": PGT}]}]),
        "SCAN-L1CD-NULL": (s1_l2, [{**l2cd, "l1": [{"index": 0, "l2ptr": h(base + 0x20000)}, {"index": 1, "l2ptr": "0x0"}]}]),
        "SCAN-L1CD-ALIGN": (s1_l2, [{**l2cd, "l1": [{"index": 0, "l2ptr": h(base + 0x20000)}, {"index": 1, "l2ptr": h(base + 0x31000)}]}]),
    }[rule]


def _scenario(first: str, second: str) -> dict:
    cd2l = "SCAN-CDTAB-CD2L" not in (first, second)
    stes, cds = [], []
    for sid, rule, base in ((0x8, first, 0x40500000), (0x20, second, 0x40600000)):
        ste, tables = _failure(rule, sid, base)
        stes.append(ste)
        cds += tables
    return {
        "name": f"{first}-then-{second}",
        "machine": {"page_size": 4096, "ram": [{"start": "0x40000000", "size": "0x2000000"}]},
        "smmus": [{
            "name": "smmu0", "base": "0x9050000",
            "registers": {"idr0": hex(IDR0_CD2L if cd2l else IDR0_NO_CD2L), "idr1": hex(IDR1), "idr5": "0x74", "cr0": "0xd",
                          "gerror": "0x0", "gerrorn": "0x0"},
            "stream_table": {"format": "2lvl", "base": "0x40100000", "log2size": 16, "split": 8, "l2_base": "0x40200000", "stes": stes},
            "cd_tables": cds,
            "pgtables": [{"root": PGT, "pool": "0x40410000", "map": [{"iova": "0xffff0000", "pa": "0x41000000", "size": "0x4000"}]}],
        }],
    }


PAIRS = [(a, b) for a, b in itertools.permutations(RULES, 2)
         if not ({a, b} & {"SCAN-CDTAB-CD2L"} and {a, b} & {"SCAN-L1CD-NULL", "SCAN-L1CD-ALIGN"})]  # CD2L=0 hides L1CDs


@pytest.mark.parametrize("first", RULES)
def test_first_failure_in_sid_order(first, tmp_path):
    for a, b in [p for p in PAIRS if p[0] == first]:
        out = tmp_path / f"{a}-{b}.elf"
        write_outputs(build_scenario(_scenario(a, b)), str(out), "elf")
        with open_dump(str(out)) as mem:
            v = analyze(mem, load_register_file(str(out) + ".smmu.json"), ["latest"]).smmus[0].verdicts["latest"]
        assert (v.decision.value, v.rule) == ("reset", a), (a, b, v.rule, v.detail)
        assert v.detail.startswith("SID 0x8:"), (a, b, v.detail)
        assert v.rule_certain, (a, b, v.unknown)


def test_cd_tables_read_in_scan_order_when_the_budget_runs_out(tmp_path, monkeypatch):
    """With room for one CD table only, the one read is the first the scan meets (SID 0x8's, at the
    higher address), so its ASID failure is found and certain; reading by address would have
    spent the budget on SID 0x20's table and reported SID 0x30's reserved Config instead."""
    from smmu_forensics.smmu import cdtable

    monkeypatch.setattr(cdtable, "MAX_WALK_CDS", 16)
    sc = _scenario("SCAN-STE-CFG", "SCAN-STE-CFG")
    st = sc["smmus"][0]["stream_table"]
    st["stes"] = [{"sid": "0x8", "preset": "s1", "cd": "0x40f00000", "cdmax": 4},
                  {"sid": "0x20", "preset": "s1", "cd": "0x40300000", "cdmax": 4},
                  {"sid": "0x30", "preset": "abort", "fields": {"CONFIG": 2}}]
    sc["smmus"][0]["cd_tables"] = [
        {"addr": "0x40f00000", "cds": [{"ssid": 0, "asid": 1, "ttb0": PGT}, {"ssid": 15, "asid": 0, "ttb0": PGT}]},
        {"addr": "0x40300000", "cds": [{"ssid": 0, "asid": 2, "ttb0": PGT}]},
    ]
    out = tmp_path / "budget.elf"
    write_outputs(build_scenario(sc), str(out), "elf")
    with open_dump(str(out)) as mem:
        v = analyze(mem, load_register_file(str(out) + ".smmu.json"), ["latest"]).smmus[0].verdicts["latest"]
    assert (v.rule, v.rule_certain) == ("SCAN-CD-ASID", True), (v.rule, v.detail, v.unknown)
    assert v.detail.startswith("SID 0x8: CD (SSID 15)")


def _two(first: dict, second: dict, tmp_path, name: str):
    sc = _scenario("SCAN-STE-CFG", "SCAN-STE-CFG")
    sc["smmus"][0]["stream_table"]["stes"] = [first, second]
    sc["smmus"][0]["cd_tables"] = [{"addr": "0x40300000", "cds": [{"ssid": 0, "asid": 2, "ttb0": PGT}]}]
    out = tmp_path / f"{name}.elf"
    write_outputs(build_scenario(sc), str(out), "elf")
    with open_dump(str(out)) as mem:
        return analyze(mem, load_register_file(str(out) + ".smmu.json"), ["latest"]).smmus[0].verdicts["latest"]


ABSENT_CD = {"preset": "s1", "cd": "0x48000000"}  # outside the dump's RAM
BAD_CFG = {"preset": "abort", "fields": {"CONFIG": 2}}


def test_missing_memory_before_the_first_failure_makes_the_rule_uncertain(tmp_path):
    v = _two({"sid": "0x8", **ABSENT_CD}, {"sid": "0x20", **BAD_CFG}, tmp_path, "before")
    assert (v.decision.value, v.rule, v.rule_certain) == ("reset", "SCAN-STE-CFG", False)
    assert any("SID 0x8 precedes SID 0x20" in u for u in v.unknown), v.unknown


def test_missing_memory_after_the_first_failure_changes_nothing(tmp_path):
    v = _two({"sid": "0x8", **BAD_CFG}, {"sid": "0x20", **ABSENT_CD}, tmp_path, "after")
    assert (v.decision.value, v.rule, v.rule_certain, v.unknown) == ("reset", "SCAN-STE-CFG", True, [])


def test_missing_memory_instead_of_a_failure_is_unknown(tmp_path):
    v = _two({"sid": "0x8", **ABSENT_CD}, {"sid": "0x20", "preset": "s1", "cd": "0x40300000"}, tmp_path, "instead")
    assert v.decision.value == "unknown" and "SID 0x8" in v.detail, v.detail

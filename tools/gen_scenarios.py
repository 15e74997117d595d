#!/usr/bin/env python3
"""Regenerate fixtures/scenarios/*.yaml: for every rule ID of every ruleset, one scenario that
triggers it and one near miss that passes.  The YAML files are committed (and are the examples
of smmu_forensics/synth/scenarios.md); this script only keeps them consistent.

    .venv/bin/python tools/gen_scenarios.py
"""

from __future__ import annotations

import copy
import os

import yaml

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "scenarios")
ALL = ("v6", "v7", "latest")
ADOPT = {rs: {"decision": "adopt", "rule": None} for rs in ALL}


def base_2lvl() -> dict:
    return {
        "machine": {"page_size": 4096, "ram": [{"start": "0x40000000", "size": "0x2000000"}]},
        "smmus": [{
            "name": "smmu0",
            "base": "0x9050000",
            "registers": {"idr0": "0x0d40101a", "idr1": "0x02730010", "idr5": "0x74", "cr0": "0xd",
                          "cr0ack": "0xd", "gbpa": "0x0", "gerror": "0x0", "gerrorn": "0x0"},
            "stream_table": {
                "format": "2lvl", "base": "0x40100000", "log2size": 16, "split": 8, "l2_base": "0x40200000",
                "stes": [{"sid": "0x8", "preset": "s1", "cd": "0x40300000"},
                         {"sid": "0x100", "preset": "s1", "cd": "0x40300040"}],
            },
            "cd_tables": [{"addr": "0x40300000", "cds": [{"ssid": 0, "asid": 1, "ttb0": "0x40400000"}]},
                          {"addr": "0x40300040", "cds": [{"ssid": 0, "asid": 2, "ttb0": "0x40400000"}]}],
            "pgtables": [{"root": "0x40400000", "pool": "0x40410000",
                          "map": [{"iova": "0xffff0000", "pa": "0x41000000", "size": "0x4000"}]}],
        }],
    }


def smmu(doc: dict) -> dict:
    return doc["smmus"][0]


def exp(**per: tuple[str, str | None]) -> dict:
    out = copy.deepcopy(ADOPT)
    for rs, (d, r) in per.items():
        out[rs] = {"decision": d, "rule": r}
    return out


def every(d: str, r: str | None) -> dict:
    return {rs: {"decision": d, "rule": r} for rs in ALL}


SCEN: dict[str, tuple[str, dict]] = {}


def add(name: str, desc: str, doc: dict, expect: dict) -> None:
    doc = copy.deepcopy(doc)
    doc["expect"] = expect
    SCEN[name] = (desc, doc)


def reg(doc: dict, **regs: str) -> dict:
    d = copy.deepcopy(doc)
    smmu(d)["registers"].update(regs)
    return d


def corrupt(doc: dict, *cs: dict) -> dict:
    d = copy.deepcopy(doc)
    smmu(d).setdefault("corruptions", []).extend(cs)
    return d


def table(doc: dict, **kv) -> dict:
    d = copy.deepcopy(doc)
    smmu(d)["stream_table"].update(kv)
    return d


B = base_2lvl()
add("adopt-2lvl", "a 2-level table as Linux writes it: every ruleset adopts it", B, ADOPT)
# -- probe ----------------------------------------------------------------------------------
add("pre-smmuen", "CR0.SMMUEN=0: nothing to adopt", reg(B, cr0="0xc", cr0ack="0xc"), every("no-adopt", "PRE-SMMUEN"))
add("pre-smmuen-near", "CR0 = SMMUEN only", reg(B, cr0="0x1", cr0ack="0x1"), ADOPT)
d = copy.deepcopy(B)
smmu(d)["coherent"] = False
add("pre-coherent", "firmware says the SMMU is not coherent", d, every("no-adopt", "PRE-COHERENT"))
d = reg(B, idr0="0x0d40100a")  # COHACC=0 in IDR0, but firmware says coherent
smmu(d)["coherent"] = True
add("pre-coherent-near", "IDR0.COHACC=0 but firmware says coherent (the kernel follows firmware)", d, ADOPT)
add("pre-sfm", "GERROR.SFM_ERR active", reg(B, gerror="0x100", gerrorn="0x0"), every("no-adopt", "PRE-SFM"))
add("pre-sfm-near", "GERROR.SFM_ERR already acknowledged in GERRORN", reg(B, gerror="0x100", gerrorn="0x100"), ADOPT)
# -- format --------------------------------------------------------------------------------
add("fmt-invalid", "STRTAB_BASE_CFG.FMT=2 (reserved)", table(B, format=2), every("reset", "FMT-INVALID"))
add("fmt-2lvl-nohw", "2-level table, IDR0.ST_LEVEL=0", reg(B, idr0="0x0540101a"), every("reset", "FMT-2LVL-NOHW"))
add("fmt-2lvl-nohw-near", "2-level table, IDR0.ST_LEVEL=1 (as the capture)", B, ADOPT)
# -- 2-level geometry ------------------------------------------------------------------------
add("2lvl-log2size-range", "LOG2SIZE 17 > SIDSIZE 16", table(B, log2size=17), every("reset", "2LVL-LOG2SIZE-RANGE"))
add("2lvl-log2size-range-near", "LOG2SIZE 16 == SIDSIZE 16", B, ADOPT)
add("2lvl-split", "SPLIT 6 (legal for the SMMU, never written by Linux)", table(B, split=6), every("reset", "2LVL-SPLIT"))
add("2lvl-split-near", "SPLIT 8", B, ADOPT)
big = reg(B, idr1="0x0273001a")  # SIDSIZE 26
add("2lvl-l1-max", "2^18 L1 descriptors (LOG2SIZE 26)", table(big, log2size=26), every("reset", "2LVL-L1-MAX"))
add("2lvl-l1-max-near", "2^17 L1 descriptors (LOG2SIZE 25), the kernel's maximum", table(big, log2size=25), ADOPT)
ub = reg(B, idr1="0x02730029")  # SIDSIZE 41
add("2lvl-l1-max-ub", "LOG2SIZE 40: v6/v7's 1U << 32 is undefined (arm64 gives 1); latest bounds it first",
    table(ub, log2size=40), exp(latest=("reset", "2LVL-L1-MAX")))
add("2lvl-l1-align", "L1 base 0x40100400 not aligned to the 2 KiB L1 table (latest only)", table(B, base="0x40100400"),
    exp(latest=("reset", "2LVL-L1-ALIGN")))
add("2lvl-l1-align-near", "L1 base 0x40100800, aligned to the 2 KiB L1 table", table(B, base="0x40100800"), ADOPT)
# -- L1 descriptors ---------------------------------------------------------------------------
add("l1-span", "L1[1] has Span 5 (the SMMU would walk 16 STEs; the kernel rejects)",
    corrupt(B, {"name": "l1-span", "index": 1, "span": 5}), every("reset", "L1-SPAN"))
add("l1-span-near", "L1[1] has Span 9", B, ADOPT)
add("l1-l2ptr-null", "L1[1] has Span 9 and L2Ptr 0: v6/v7 skip it (fresh L2 later), latest rejects",
    corrupt(B, {"name": "l1-null-l2ptr", "index": 1}), exp(latest=("reset", "L1-L2PTR-NULL")))
add("l1-l2ptr-align", "L1[1] L2Ptr off by 0x40 from 16 KiB alignment (latest rejects)",
    corrupt(B, {"name": "l1-misalign-l2ptr", "index": 1, "offset": "0x40"}), exp(latest=("reset", "L1-L2PTR-ALIGN")))
add("l1-l2ptr-align-near", "L1[1] L2Ptr moved by 16 KiB: still aligned",
    corrupt(B, {"name": "l1-misalign-l2ptr", "index": 1, "offset": "0x4000"}), ADOPT)
add("l1-alias", "L1[1] points at L1[0]'s L2 table: SIDs alias (kernel accepts; a finding)",
    corrupt(B, {"name": "l1-alias", "index": 1, "same_as": 0}), ADOPT)
# -- linear ----------------------------------------------------------------------------------
LIN = copy.deepcopy(B)
smmu(LIN)["stream_table"] = {"format": "linear", "base": "0x40400000", "log2size": 16, "fill": "zero",
                             "stes": [{"sid": "0x8", "preset": "s1", "cd": "0x40300000"}]}
smmu(LIN)["cd_tables"] = [{"addr": "0x40300000", "cds": [{"ssid": 0, "asid": 1, "ttb0": "0x40800000"}]}]
smmu(LIN)["pgtables"] = [{"root": "0x40800000", "pool": "0x40810000", "map": [{"iova": "0x10000", "pa": "0x41000000"}]}]
add("linear-adopt", "a linear table (another OS or an old kernel; Linux uses 2-level here)", LIN, ADOPT)
add("lin-log2size-max", "linear LOG2SIZE 26 > every cap", table(LIN, log2size=26, base="0x40000000", stes=[]), every("reset", "LIN-LOG2SIZE-MAX"))
add("lin-log2size-cap", "linear LOG2SIZE 17 > SIDSIZE 16: v6/v7 cap at 25 on 2-level HW, latest at SIDSIZE",
    table(LIN, log2size=17, base="0x40800000"), exp(latest=("reset", "LIN-LOG2SIZE-MAX")))
add("lin-align", "linear table of 4 MiB at a 1 MiB-aligned base (latest only)", table(LIN, base="0x40100000"),
    exp(latest=("reset", "LIN-ALIGN")))
# -- latest's ASID/VMID scan -------------------------------------------------------------------
def with_ste(doc: dict, **ste) -> dict:
    d = copy.deepcopy(doc)
    smmu(d)["stream_table"]["stes"].append(ste)
    return d


add("scan-ste-cfg", "SID 0x9 has STE.Config 2 (reserved; behaves as abort)",
    with_ste(B, sid="0x9", preset="abort", fields={"CONFIG": 2}), exp(latest=("reset", "SCAN-STE-CFG")))
add("scan-ste-cfg-near", "SID 0x9 is a bypass STE (accepted; DMA from it reaches all memory)",
    with_ste(B, sid="0x9", preset="bypass"), ADOPT)
S2 = reg(B, idr0="0x0d40101b")  # the capture's IDR0 plus S2P
add("scan-vmid", "SID 0x9 translates through stage 2 with VMID 0", with_ste(S2, sid="0x9", preset="s2", vmid=0, s2ttb="0x40500000"),
    exp(latest=("reset", "SCAN-VMID")))
d = with_ste(S2, sid="0x9", preset="s2", vmid=1, s2ttb="0x40500000")
smmu(d)["pgtables"].append({"root": "0x40500000", "pool": "0x40510000", "stage": 2,
                            "map": [{"iova": "0x80000000", "pa": "0x41000000", "size": "0x2000"},
                                    {"iova": "0x90000000", "pa": "0x40200000", "writable": False}]})
add("scan-vmid-near", "SID 0x9 translates through stage 2 with VMID 1 (its IPA 0x90000000 maps an L2 table read-only)", d, ADOPT)
d = copy.deepcopy(d)
smmu(d)["pgtables"][-1]["map"][1]["writable"] = True
add("dma-writes-l2", "stage-2 DMA of SID 0x9 can write L1[0]'s L2 table (kernel accepts; a critical finding)", d, ADOPT)
add("scan-cdtab-null", "stage-1 STE with S1ContextPtr 0", with_ste(B, sid="0x9", preset="s1"), exp(latest=("reset", "SCAN-CDTAB-NULL")))
d = with_ste(B, sid="0x9", preset="s1", cd="0x40300080", cdmax=1)
smmu(d)["cd_tables"].append({"addr": "0x40300080", "cds": [{"ssid": 0, "asid": 3, "ttb0": "0x40400000"}]})
add("scan-cdtab-cdmax", "S1CDMax 1 with SSIDSIZE 0", d, exp(latest=("reset", "SCAN-CDTAB-CDMAX")))
add("scan-cdtab-cdmax-near", "S1CDMax 1 with SSIDSIZE 1", reg(d, idr1="0x02730050"), ADOPT)
add("scan-cdtab-fmt", "S1Fmt 1 (2-level, 4 KiB leaves: legal, never used by Linux)",
    with_ste(B, sid="0x9", preset="s1", cd="0x40300000", fields={"S1FMT": 1}), exp(latest=("reset", "SCAN-CDTAB-FMT")))
L2CD = with_ste(reg(B, idr0="0x0d48101a", idr1="0x027302d0"), sid="0x9", preset="s1", cd="0x40310000", cdmax=11, cd_format="64k_l2")
smmu(L2CD)["cd_tables"].append({"addr": "0x40310000", "format": "64k_l2",
                                 "l1": [{"index": 0, "l2ptr": "0x40320000"}, {"index": 1, "l2ptr": "0x40330000"}],
                                 "cds": [{"ssid": 0, "asid": 5, "ttb0": "0x40400000"}, {"ssid": 1025, "asid": 6, "ttb0": "0x40400000"}]})
add("scan-cdtab-cd2l", "64K_L2 CD table but IDR0.CD2L=0", reg(L2CD, idr0="0x0d40101a"), exp(latest=("reset", "SCAN-CDTAB-CD2L")))
add("scan-cdtab-cd2l-near", "64K_L2 CD table with IDR0.CD2L=1 and SSIDSIZE 11", L2CD, ADOPT)
d = with_ste(reg(B, idr1="0x02730050"), sid="0x9", preset="s1", cd="0x40300040", cdmax=1)
add("scan-cdtab-align", "linear CD table of 2 CDs (128 bytes) at a 64-byte-aligned address", d, exp(latest=("reset", "SCAN-CDTAB-ALIGN")))
d = with_ste(reg(B, idr1="0x02730050"), sid="0x9", preset="s1", cd="0x40300080", cdmax=1)
smmu(d)["cd_tables"].append({"addr": "0x40300080", "cds": [{"ssid": 0, "asid": 3, "ttb0": "0x40400000"},
                                                         {"ssid": 1, "asid": 4, "ttb0": "0x40400000"}]})
add("scan-cdtab-align-near", "linear CD table of 2 CDs at a 128-byte-aligned address", d, ADOPT)
add("scan-cd-asid", "the CD of SID 0x100 has ASID 0", corrupt(B, {"name": "cd-asid", "cd": "0x40300040", "asid": 0}),
    exp(latest=("reset", "SCAN-CD-ASID")))
add("scan-cd-asid-near", "the CD of SID 0x100 has ASID 65535 (ASID16=1)", corrupt(B, {"name": "cd-asid", "cd": "0x40300040", "asid": 65535}), ADOPT)
d = copy.deepcopy(L2CD)
smmu(d)["cd_tables"][-1]["l1"].append({"index": 1, "l2ptr": "0x0"})
smmu(d)["cd_tables"][-1]["cds"] = [{"ssid": 0, "asid": 5, "ttb0": "0x40400000"}]
add("scan-l1cd-null", "a valid L1CD with L2Ptr 0", d, exp(latest=("reset", "SCAN-L1CD-NULL")))
d = copy.deepcopy(L2CD)
smmu(d)["cd_tables"][-1]["l1"] = [{"index": 0, "l2ptr": "0x40320000"}, {"index": 1, "l2ptr": "0x40331000"}]
smmu(d)["cd_tables"][-1]["cds"] = [{"ssid": 0, "asid": 5, "ttb0": "0x40400000"}]
add("scan-l1cd-align", "a valid L1CD whose leaf table is 4 KiB, not 64 KiB, aligned", d, exp(latest=("reset", "SCAN-L1CD-ALIGN")))
# -- other shapes ----------------------------------------------------------------------------
d = copy.deepcopy(B)
d["machine"]["page_size"] = 65536
d["machine"]["ram"] = [{"start": "0x40000000", "size": "0x4000000"}]
add("pages-64k", "the adopted table of a 64 KiB-page kernel", d, ADOPT)
d = copy.deepcopy(B)
second = copy.deepcopy(smmu(B))
second.update(name="smmu1", base="0x9070000")
second["stream_table"] = {"format": "2lvl", "base": "0x40600000", "log2size": 16, "l2_base": "0x40700000",
                          "stes": [{"sid": "0x200", "preset": "bypass"}]}
second["cd_tables"] = []
second["pgtables"] = []
second["corruptions"] = [{"name": "l1-span", "index": 2, "span": 3}]
second["expect"] = every("reset", "L1-SPAN")
d["smmus"].append(second)
add("two-smmus", "two SMMUs: smmu0 adopted, smmu1 rejected (L1[2] span 3)", d, ADOPT)
add("table-outside-ram", "STRTAB_BASE points beyond RAM: nothing to read, every verdict unknown",
    table(B, base="0x80000000"), every("unknown", "L1-SPAN"))
d = corrupt(B, {"name": "exclude", "start": "0x40200000", "size": "0x4000"})
d["skip_formats"] = ["raw", "lime"]  # these formats cannot mark a page as excluded
add("l2-excluded", "the dumper filtered out L1[0]'s L2 table: the scan cannot finish",
    d, exp(latest=("unknown", "SCAN-STE-CFG")))


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, (desc, doc) in SCEN.items():
        doc = {"name": name, "description": desc, **doc}
        with open(os.path.join(OUT, f"{name}.yaml"), "w") as f:
            f.write(f"# {desc}\n# generated by tools/gen_scenarios.py; the format: smmu-forensics synth --spec\n")
            yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=None, width=120)
    print(len(SCEN), "scenarios")


if __name__ == "__main__":
    main()

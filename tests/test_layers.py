"""The refactored pipeline's contracts: typed states, rulesets as data, certainty, JSON streaming."""

from __future__ import annotations

import io
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CARVED
from smmu_forensics.analysis import analyze
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.report import jsonout, model
from smmu_forensics.rules.base import Decision
from smmu_forensics.rules.versions import RULE_IDS, VERSIONS
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.synth.image import MemoryImage
from smmu_forensics.synth.writers import write_elf


def test_rulesets_are_data():
    for name, rs in VERSIONS.items():
        assert RULE_IDS[name] == list(rs.rules)
        for rid, rule in rs.rules.items():
            if rule.message is not None:
                assert "%" not in rule.message or rule.text is not None, rid
    assert VERSIONS["latest"].rule("SCAN-CD-ASID").text() == "kdump: failed to reserve in-use ASIDs/VMIDs"
    assert VERSIONS["v6"].rule("L1-SPAN").text(1, 5, 9) == "kdump: L1[1] unsupported span 5 (vs 9)"
    assert VERSIONS["latest"].rule("L1-SPAN").text(1, 5, 9) == "L1[1] unsupported span 5 (vs 9)"
    assert VERSIONS["latest"].checks[-1].__name__ == "scan" and "scan" not in [c.__name__ for c in VERSIONS["v6"].checks]


def test_linux_masks_come_from_the_fields():
    assert L.LINUX_STE_S1CTXPTR_MASK == L.genmask(51, 6)
    assert L.LINUX_L1CD_L2PTR_MASK == L.genmask(51, 12)
    assert L.LINUX_STE_VMID_MASK == 0xFFFF
    assert L.LINUX_CD_V == 1 << 31 and L.LINUX_CD_ASID_SHIFT == 48
    assert L.L1STD.res0_mask() == (1 << 5) | L.genmask(63, 56)


def test_rule_uncertain_when_earlier_memory_is_missing(tmp_path):
    """L1[0..511] are outside the dump, L1[600] has span 5: the table is rejected either way, but the
    kernel may have failed on an unseen earlier descriptor: rule_certain is false, unknown says why."""
    base = 0x40000000
    img = MemoryImage()
    img.ram = [(base + 0x1000, 0x100000)]
    img.write(base + 8 * 600, (0x40100000 | 5).to_bytes(8, "little"))
    write_elf(img, str(tmp_path / "u.elf"))
    regs = Registers.from_mapping({"strtab_base": base, "strtab_base_cfg": 0x10214, "idr0": 0x0D40101A, "idr1": 0x02730014,
                                   "cr0": 0xD, "gerror": 0, "gerrorn": 0})
    with open_dump(str(tmp_path / "u.elf")) as mem:
        a = analyze(mem, [regs], ["latest", "v6"])
    for name in ("latest", "v6"):
        v = a.smmus[0].verdicts[name]
        assert (v.decision, v.rule, v.rule_certain) == (Decision.RESET, "L1-SPAN", False), name
        assert any("L1[0] precedes L1[600]" in u for u in v.unknown)
    rep = model.build(a)
    assert rep["smmus"][0]["verdicts"]["latest"]["rule_certain"] is False
    assert rep["exit_code"] == 1


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_json_cannot_be_forged_by_names(name):
    """A hostile SMMU name (sentinels, quotes, control characters) stays a string in valid JSON."""
    regs = Registers.from_mapping({"strtab_base_cfg": 0x10210, "strtab_base": 0x431BE000})
    regs.name = name + "\x00stes0\x00"
    rep = model.build(analyze(None, [regs], ["latest"]))
    buf = io.StringIO()
    jsonout.write(rep, buf, pretty=False)
    back = json.loads(buf.getvalue())
    assert back["smmus"][0]["name"] == regs.name


def test_vectorised_fields_equal_the_construct_path():
    rnd = np.random.default_rng(7)
    words = rnd.integers(0, 1 << 63, size=(64, 8), dtype=np.uint64) & np.uint64((1 << 64) - 1 - 0xE)
    fast = model._fields_columns(L.STE, words)
    for k in range(len(words)):
        assert fast[k] == model.decode_struct(L.STE, [int(x) for x in words[k]])


def test_all_lists_every_dma_mapping():
    """--all lists every leaf the walk recorded (the carved capture: 319 mappings behind ASID 1)."""
    from smmu_forensics.analysis import open_memory
    from smmu_forensics.smmu.registers import load_register_file

    with open_memory(str(CARVED)) as mem:
        a = analyze(mem, load_register_file(str(CARVED) + ".smmu.json"), ["latest"])
    short = {d["ttb0"]: d for d in model.build(a)["smmus"][0]["dma"]}
    full = {d["ttb0"]: d for d in model.build(a, list_all=True)["smmus"][0]["dma"]}
    assert full["0x482c9000"]["n_leaves"] == 319 and len(full["0x482c9000"]["leaves"]) == 319
    assert len(short["0x482c9000"]["leaves"]) == model.MAX_DMA_LEAVES


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_text_and_markdown_cannot_be_forged_by_names(name):
    """A hostile SMMU name (newlines, CR, ESC, bidi, Markdown) adds no line to the text or Markdown
    report and prints no control character: one line stays one line, the report's own lines stay
    the only ones that start like a verdict."""
    from rich.console import Console

    from smmu_forensics.report import markdown, terminal

    def both(n: str) -> tuple[str, str]:
        regs = Registers.from_mapping({"strtab_base_cfg": 0x10210, "strtab_base": 0x431BE000})
        regs.name = n
        rep = model.build(analyze(None, [regs], ["latest"]))
        buf = io.StringIO()
        terminal.render(rep, Console(file=buf, width=4000, no_color=True, highlight=False, soft_wrap=False))
        return buf.getvalue(), markdown.render(rep)

    text0, md0 = both("smmu0")
    text1, md1 = both(name)
    assert len(text1.splitlines()) == len(text0.splitlines())
    assert len(md1.splitlines()) == len(md0.splitlines())
    for out in (text1, md1):
        assert not any(ch in out for ch in "\x1b\r\x0b\x0c\x85\u2028\u2029\u202e")

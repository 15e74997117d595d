"""The command line as users meet it: renderers, escaping, register input, --sid, synth, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CARVED, SCENARIOS, cli_json, run_cli
from smmu_forensics.synth.scenario import build_scenario, load, write_outputs


def test_version_and_help():
    p = run_cli("--version")
    assert p.returncode == 0 and b"smmu-forensics" in p.stdout
    p = run_cli("--help")
    assert p.returncode == 0 and b"Exit codes" in p.stdout
    p = run_cli("inspect", "--bogus")
    assert p.returncode == 2 and b"Traceback" not in p.stderr


def test_carved_fixture_inspect_text_markdown_json(carved_truth):
    p = run_cli("inspect", str(CARVED), "--rules", "all")  # sidecar found automatically
    out = p.stdout.decode()
    assert p.returncode == 0
    assert "\x1b[" not in out  # not a terminal: plain text
    for want in ("ADOPT", "0x431be000", "0x7ac60000", "0x7ac64000", "kdump: adopting crashed kernel's stream table", "findings: none"):
        assert want in out, want
    md = run_cli("inspect", str(CARVED), "--format", "markdown").stdout.decode()
    assert md.startswith("# smmu-forensics report") and "| latest | **ADOPT** |" in md and "| 0x100 | 0x7ac64000 | s1 |" in md
    code, rep = cli_json("inspect", str(CARVED), "--rules", "all")
    s = rep["smmus"][0]
    assert code == 0 and s["registers"]["strtab_base"] == "0x40000000431be000"
    assert [e["sid"] for e in s["table"]["stes"]] == [0x8, 0x10, 0x100]
    assert s["table"]["stes"][0]["raw"] == carved_truth["stream_table"]["stes"]["0x8"]["raw_hex"]
    assert s["features"]["coherent_basis"].startswith("IDR0.COHACC")


def test_sid_detail_decodes_the_cd(carved_truth):
    code, rep = cli_json("inspect", str(CARVED), "--sid", "0x8")
    d = rep["smmus"][0]["sid_detail"]
    assert d["found"] and d["fields"]["S1CONTEXTPTR"]["value"] == "0x431cd000"
    cd = d["cd_table"]["cds"][0]
    assert cd["fields"]["ASID"]["value"] == 2 and cd["fields"]["TTB0"]["value"] == "0x4820e000"
    assert cd["fields"]["TG0"] == {"value": 0, "meaning": "4K"}
    text = run_cli("inspect", str(CARVED), "--sid", "8").stdout.decode()
    assert "CD SSID 0 at 0x431cd000" in text and "S1CONTEXTPTR" in text
    code, rep = cli_json("inspect", str(CARVED), "--sid", "0x5000")
    assert rep["smmus"][0]["sid_detail"]["found"] is False


def test_register_flags_override_and_raw_page(tmp_path):
    # the same registers as a raw MMIO page 0
    regs = json.loads((CARVED.parent / (CARVED.name + ".smmu.json")).read_text())
    page = bytearray(4096)
    offs = {"idr0": 0, "idr1": 4, "idr5": 0x14, "cr0": 0x20, "cr0ack": 0x24, "gbpa": 0x44, "gerror": 0x60}
    for k, off in offs.items():
        page[off : off + 4] = int(regs[k], 16).to_bytes(4, "little")
    page[0x80:0x88] = int(regs["strtab_base"], 16).to_bytes(8, "little")
    page[0x88:0x8C] = int(regs["strtab_base_cfg"], 16).to_bytes(4, "little")
    (tmp_path / "page0.bin").write_bytes(bytes(page))
    code, rep = cli_json("inspect", str(CARVED), "--regs", str(tmp_path / "page0.bin"), "--rules", "all")
    assert code == 0 and all(v["decision"] == "adopt" for v in rep["smmus"][0]["verdicts"].values())
    # a flag overrides the file: CR0.SMMUEN=0
    code, rep = cli_json("inspect", str(CARVED), "--cr0", "0xc", "--rules", "v6")
    v = rep["smmus"][0]["verdicts"]["v6"]
    assert code == 1 and (v["decision"], v["rule"]) == ("no-adopt", "PRE-SMMUEN")
    # firmware coherency override
    code, rep = cli_json("inspect", str(CARVED), "--no-coherent")
    v = rep["smmus"][0]["verdicts"]["latest"]
    assert code == 1 and v["rule"] == "PRE-COHERENT" and any(f["id"] == "REG-COHACC-MISMATCH" for f in rep["smmus"][0]["findings"])


def test_missing_registers_give_unknown_not_a_guess(tmp_path):
    code, rep = cli_json("inspect", str(CARVED), "--regs", str(_write(tmp_path, "r.json", {"strtab_base": "0x431be000", "strtab_base_cfg": "0x10210"})))
    v = rep["smmus"][0]["verdicts"]["latest"]
    assert code == 4 and v["decision"] == "unknown" and "CR0" in v["unknown"][0]


def test_several_smmus_in_one_register_file(tmp_path):
    regs = json.loads((CARVED.parent / (CARVED.name + ".smmu.json")).read_text())
    other = dict(regs, name="second", smmu_base="0x9070000", cr0="0x0")
    f = _write(tmp_path, "two.json", {"smmus": [regs, other]})
    code, rep = cli_json("inspect", str(CARVED), "--regs", str(f))
    assert [s["name"] for s in rep["smmus"]] == ["smmu@0x9050000", "second"]
    assert rep["smmus"][1]["verdicts"]["latest"]["decision"] == "no-adopt" and code == 1


def _write(d: Path, name: str, obj: object) -> Path:
    (d / name).write_text(json.dumps(obj))
    return d / name


HOSTILE = "6.1\x1b]0;pwned\x07\x1b[31m | *bold* [link](http://x) <script>alert(1)</script> `code`"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    doc = load(str(SCENARIOS / "adopt-2lvl.yaml"))
    doc["machine"]["vmcoreinfo"] = {"OSRELEASE": HOSTILE}
    doc["smmus"][0]["name"] = "evil\x1b[2J[red]name[/red]"
    built = build_scenario(doc)
    out = d / "hostile.kdump"
    write_outputs(built, str(out), "kdump-zlib")
    return out


def test_text_from_the_dump_is_escaped(hostile):
    for args in (["info", str(hostile)], ["inspect", str(hostile)], ["inspect", str(hostile), "--format", "markdown"]):
        out = run_cli(*args).stdout.decode()
        assert "\x1b" not in out and "\x07" not in out, args
        assert "\\x1b" in out, args
    md = run_cli("inspect", str(hostile), "--format", "markdown").stdout.decode()
    assert "<script>" not in md and "\\<script\\>" in md and "\\*bold\\*" in md and "\\[link\\]" in md and "\\|" in md
    text = run_cli("inspect", str(hostile)).stdout.decode()
    assert "[red]name[/red]" in text  # Rich markup in a name is shown, not interpreted
    js = json.loads(run_cli("info", str(hostile), "--format", "json").stdout)
    assert js["vmcoreinfo"]["OSRELEASE"] == HOSTILE  # JSON keeps the real bytes (escaped by the JSON encoder)


def test_xp_formats():
    p = run_cli("xp", str(CARVED), "0x7ac60200", "--len", "32")
    assert p.returncode == 0 and p.stdout.decode().splitlines()[0].startswith("000000007ac60200:  0b d0 1c 43 00 00 00 00")
    js = json.loads(run_cli("xp", str(CARVED), "0x7ac60200", "--len", "8", "--format", "json").stdout)
    assert js == {"addr": "0x7ac60200", "len": 8, "hex": "0bd01c4300000000", "hex_with_holes": "0bd01c4300000000", "holes": []}
    p = run_cli("xp", str(CARVED), "0x7ac6fff8", "--len", "16", "--format", "json")
    js = json.loads(p.stdout)
    assert p.returncode == 4 and js["hex"] is None and js["holes"][0]["state"] == "absent" and js["hex_with_holes"].endswith("??" * 8)
    p = run_cli("xp", str(CARVED), "0x0", "--format", "raw")
    assert p.returncode == 4 and p.stdout == b"" and b"absent" in p.stderr


def test_info_json_shape():
    js = json.loads(run_cli("info", str(CARVED), "--format", "json").stdout)
    assert js["format"] == "elf64" and js["page_size"] == 4096 and js["vmcoreinfo"]["OSRELEASE"] == "6.1.0-56-arm64"
    assert {"start": "0x7ac60000", "end": "0x7ac70000", "size": 0x10000, "state": "present"} in js["ranges"]
    assert set(js["pages"]) == {"present", "zero", "excluded", "lost", "corrupt"}


def test_synth_command_and_raw_sidecar(tmp_path):
    p = run_cli("synth", str(SCENARIOS / "l1-span.yaml"), "-o", str(tmp_path / "d.raw"), "--format", "raw")
    assert p.returncode == 0 and p.stdout.decode().split() == [str(tmp_path / "d.raw"), str(tmp_path / "d.raw.smmu.json"), str(tmp_path / "d.raw.expected.json")]
    side = json.loads((tmp_path / "d.raw.smmu.json").read_text())
    assert side["raw_base"] == "0x40000000"
    exp = json.loads((tmp_path / "d.raw.expected.json").read_text())
    assert exp["smmus"][0]["verdicts"]["latest"] == {"decision": "reset", "rule": "L1-SPAN"}
    code, rep = cli_json("inspect", f"{tmp_path / 'd.raw'}@0x40000000", "--rules", "all")
    assert code == 1 and rep["smmus"][0]["verdicts"]["v6"]["message"] == "kdump: L1[1] unsupported span 5 (vs 9)"
    code, rep = cli_json("inspect", str(tmp_path / "d.raw"), "--raw-base", "0x40000000")
    assert code == 1
    code, rep = cli_json("inspect", str(tmp_path / "d.raw"))  # the sidecar's raw_base
    assert code == 1 and rep["dump"]["format"] == "raw"
    p = run_cli("synth", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "x"))
    assert p.returncode == 2 and b"Traceback" not in p.stderr


def test_no_color_and_plain_text():
    p = run_cli("inspect", str(CARVED), env={"NO_COLOR": "1"})
    assert p.returncode == 0 and b"\x1b[" not in p.stdout


def test_the_answer_comes_first(tmp_path):
    """Text and Markdown open with the decision per ruleset, the rule, the kernel's message and the
    worst finding, before any register or table."""
    from smmu_forensics.synth.scenario import build_scenario, load, write_outputs

    out = str(tmp_path / "l1.elf")
    write_outputs(build_scenario(load(str(SCENARIOS / "l1-span.yaml"))), out, "elf")
    text = run_cli("inspect", out, "--rules", "all").stdout.decode()
    head = text[: text.index("Registers")]
    for rs in ("latest", "v7", "v6"):
        assert f"smmu0 {rs} FULL RESET L1-SPAN: " in head
    assert "unsupported span 5" in head and "worst finding: warning L1-SPAN-SMALL at L1[1]" in head
    md_out = run_cli("inspect", out, "--format", "markdown").stdout.decode()
    assert md_out.index("| smmu0 | latest | **FULL RESET** | L1-SPAN |") < md_out.index("## SMMU smmu0")
    assert md_out.index("Worst finding on smmu0: **warning** `L1-SPAN-SMALL`") < md_out.index("## SMMU smmu0")


def test_shared_notes_once_and_sid_fields_of_its_stages(tmp_path):
    """A note every ruleset carries prints once; --sid on a stage-1 STE leaves out the zero stage-2
    fields (and says how many); JSON keeps every field."""
    regs = json.loads((CARVED.parent / (CARVED.name + ".smmu.json")).read_text())
    regs.pop("gerrorn", None)
    f = tmp_path / "r.json"
    f.write_text(json.dumps(regs))
    for fmt in ("text", "markdown"):
        out = run_cli("inspect", str(CARVED), "--regs", str(f), "--sid", "8", "--format", fmt).stdout.decode()
        assert out.count("GERRORN not given") == 1, fmt
        assert "S2VMID" not in out and "zero fields of a stage Config s1 does not use left out" in out
        assert "S1CONTEXTPTR" in out
    code, rep = cli_json("inspect", str(CARVED), "--regs", str(f), "--sid", "8")
    assert "S2VMID" in rep["smmus"][0]["sid_detail"]["fields"]

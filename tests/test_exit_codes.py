"""README's exit-code table is the truth for every command and every way out (issue 8)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CARVED, SCENARIOS, run_cli
from smmu_forensics.analysis import analyze
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.report import markdown, model
from smmu_forensics.smmu.registers import Registers


def readme_exit_code(rep: dict, fail_on: str | None = None) -> int:
    """The table in README.md, applied to a report's decisions and findings."""
    decisions = [v["decision"] for s in rep["smmus"] for v in s["verdicts"].values()]
    if any(d in ("reset", "no-adopt") for d in decisions):
        return 1
    order = ["critical", "error", "warning", "info"]
    if fail_on and any(order.index(f["severity"]) <= order.index(fail_on) for s in rep["smmus"] for f in s["findings"]):
        return 1
    return 4 if "unknown" in decisions or not decisions else 0


def test_a_closed_pipe_is_never_a_verdict():
    p = subprocess.Popen([sys.executable, "-m", "smmu_forensics", "inspect", str(CARVED), "--rules", "all", "--all", "--format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    p.stdout.close()  # the reader goes away before anything is written
    p.wait(timeout=60)
    assert p.returncode == 141, p.stderr.read() if p.stderr else ""


def test_synth_output_errors_are_usage_errors(tmp_path):
    for out in ("/nonexistent/x.elf", str(tmp_path) + "/"):
        p = run_cli("synth", str(SCENARIOS / "l1-span.yaml"), "-o", out)
        assert p.returncode == 2 and p.stderr.count(b"\n") == 1, p.stderr


@pytest.mark.parametrize("content,needle", [
    ({"strtab_base_cfgg": "0x10210"}, b"did you mean 'strtab_base_cfg'"),
    ({"first_kernel_xp": {"idr0": "0x1"}, "kdump_kernel_xp": {}}, b"unknown key 'first_kernel_xp'"),
    ({"smmus": [{"idr0": "0x1"}], "extra": 1}, b"unknown top-level key 'extra'"),
])
def test_register_files_with_unknown_keys(tmp_path, content, needle):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(content))
    for args in (("inspect", str(CARVED), "--regs", str(f)), ("regs", str(f))):
        p = run_cli(*args)
        assert p.returncode == 2 and needle in p.stderr, (args, p.stderr)


def test_register_file_nested_too_deep(tmp_path):
    f = tmp_path / "deep.json"
    f.write_text("[" * 100000 + "]" * 100000)
    p = run_cli("regs", str(f))
    assert p.returncode == 2 and b"nested" in p.stderr, p.stderr


def test_scenario_with_misspelt_keys(tmp_path):
    text = (SCENARIOS / "adopt-2lvl.yaml").read_text()
    for good, bad in (("log2size:", "log2szie:"), ("split:", "spilt:")):
        f = tmp_path / f"{bad[:-1]}.yaml"
        f.write_text(text.replace(good, bad, 1))
        p = run_cli("synth", str(f), "-o", str(tmp_path / "x.elf"))
        assert p.returncode == 2 and f"did you mean '{good[:-1]}'".encode() in p.stderr, p.stderr


def test_toml_scenario(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "t"\n[[smmus]]\nname = "smmu0"\n[smmus.stream_table]\nformat = "2lvl"\nbase = 0x40100000\n'
                 'log2size = 16\n[[smmus.stream_table.stes]]\nsid = 8\npreset = "bypass"\n')
    p = run_cli("synth", str(f), "-o", str(tmp_path / "t.elf"))
    assert p.returncode == 0, p.stderr
    p = run_cli("inspect", str(tmp_path / "t.elf"), "--format", "json")
    assert json.loads(p.stdout)["smmus"][0]["table"]["stes"][0]["config"] == "bypass"


def test_sid_the_walk_never_reaches():
    p = run_cli("inspect", str(CARVED), "--sid", "0x5000")
    assert p.returncode == 2 and b"--sid 0x5000" in p.stderr
    p = run_cli("inspect", str(CARVED), "--sid", "0x8", "--format", "markdown")
    assert p.returncode == 0 and b"### SID 0x8" in p.stdout and b"S1CONTEXTPTR | 0x431cd000" in p.stdout


def test_xp_past_the_address_space():
    p = run_cli("xp", str(CARVED), "0xffffffffffffffff", "--len", "16")
    assert p.returncode == 2 and p.stderr.count(b"\n") == 1


def test_the_hint_when_followed_gives_a_decision(tmp_path):
    dump = tmp_path / "nosidecar.elf"
    shutil.copy(CARVED, dump)
    p = run_cli("inspect", str(dump))
    assert p.returncode == 4 and b"--gerrorn" in p.stderr and b"+0x64" in p.stderr
    p = run_cli("inspect", str(dump), "--strtab-base", "0x40000000431be000", "--strtab-base-cfg", "0x10210", "--idr0", "0x0d40101a",
                "--idr1", "0x02730010", "--cr0", "0xd", "--gerror", "0", "--gerrorn", "0")
    assert p.returncode == 0, p.stdout[-400:]


@pytest.mark.parametrize("cached", [True, False])
def test_interrupted_unpack_leaves_nothing(tmp_path, monkeypatch, cached):
    import tempfile

    from smmu_forensics.dumps import unpack

    src = tmp_path / "d.elf.gz"
    with open(CARVED, "rb") as fin, gzip.open(src, "wb") as fout:
        fout.write(fin.read())
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    monkeypatch.setenv("SMMU_FORENSICS_CACHE", str(work))
    if not cached:
        monkeypatch.setenv("SMMU_FORENSICS_NO_CACHE", "1")

    def ctrl_c(label: str, done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        unpack.unpack(str(src), "gzip", ctrl_c)
    assert os.listdir(work) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=st.sampled_from([0x10210, 0x10211, 0x10208, 0x30210, 0x00208, 0x10610]), cr0=st.sampled_from([0xD, 0xC]),
       idr0=st.sampled_from([0x0D40101A, 0x0D40100A, 0x0D40001A]), gerror=st.sampled_from([0, 0x100]),
       fail_on=st.sampled_from([None, "critical", "warning"]))
def test_exit_code_is_the_readme_table(cfg, cr0, idr0, gerror, fail_on):
    """Random register values over the real carved table: the report's exit code is what README's
    table says for its decisions and findings, and every renderer copes."""
    from smmu_forensics.rules.findings import Severity

    regs = Registers.from_mapping({"strtab_base": 0x40000000431BE000, "strtab_base_cfg": cfg, "idr0": idr0, "idr1": 0x02730010,
                                   "cr0": cr0, "gerror": gerror, "gerrorn": 0})
    with open_dump(str(CARVED)) as mem:
        rep = model.build(analyze(mem, [regs], ["latest", "v7", "v6"], Severity(fail_on) if fail_on else None))
    assert rep["exit_code"] == readme_exit_code(rep, fail_on)
    markdown.render(rep)


def test_cli_exit_codes_equal_the_report(tmp_path):
    """Every renderer of the CLI exits with the report's own exit code."""
    for name in ("adopt-2lvl", "l1-span", "l2-excluded", "pre-smmuen"):
        from smmu_forensics.synth.scenario import build_scenario, load, write_outputs

        out = tmp_path / f"{name}.elf"
        write_outputs(build_scenario(load(str(SCENARIOS / f"{name}.yaml"))), str(out), "elf")
        rep = json.loads(run_cli("inspect", str(out), "--format", "json", "--rules", "all").stdout)
        assert rep["exit_code"] == readme_exit_code(rep), name
        for fmt in ("text", "markdown", "json"):
            assert run_cli("inspect", str(out), "--format", fmt, "--rules", "all").returncode == rep["exit_code"], (name, fmt)



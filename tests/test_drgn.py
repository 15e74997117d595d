"""drgn integration and the Python API: the same inspection over drgn's memory reader as over
this package's own format layers; drgn stays optional for everything else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CAPTURE, SCENARIOS, have_captures, run_cli
from smmu_forensics import inspect

drgn = pytest.importorskip("drgn")
ROOT = Path(__file__).resolve().parent.parent


def same_evidence(a: dict, b: dict) -> None:
    assert len(a["smmus"]) == len(b["smmus"])
    for x, y in zip(a["smmus"], b["smmus"]):
        assert x["verdicts"] == y["verdicts"]
        for k in ("base", "log2size", "split", "l1", "stes"):
            assert x["table"][k] == y["table"][k], k
        assert x["dma"] == y["dma"]
        why = lambda f: (f["id"], f["severity"], f["where"], f["message"].split(" (")[0])  # noqa: E731 - the reader names itself in reasons
        assert [why(f) for f in x["findings"]] == [why(f) for f in y["findings"]]
        assert x.get("discovery", {}).get("evidence") == y.get("discovery", {}).get("evidence")


@pytest.mark.parametrize("scenario,fmt", [("adopt-2lvl", "kdump-zlib"), ("scan-cd-asid", "elf"), ("l2-excluded", "kdump-zlib")])
def test_drgn_reader_gives_the_same_report(tmp_path, scenario, fmt):
    out = tmp_path / f"{scenario}.dump"
    p = run_cli("synth", str(SCENARIOS / f"{scenario}.yaml"), "-o", str(out), "--format", fmt)
    assert p.returncode == 0, p.stderr
    prog = drgn.Program()
    prog.set_core_dump(str(out))
    side = str(out) + ".smmu.json"
    via_drgn = inspect(prog, regs=side, rules=["all"])
    ours = inspect(str(out), rules=["all"])
    assert via_drgn.report["dump"]["format"] == "drgn"
    same_evidence(via_drgn.report, ours.report)
    assert via_drgn.exit_code == ours.exit_code


@pytest.mark.skipif(not have_captures(), reason="needs ../shared/captures")
def test_drgn_session_on_the_capture_finds_everything():
    """No register file, no debug info: drgn's reader, VMCOREINFO and the kdump file's ranges are
    enough to find the SMMU, its table and devices, as the CLI does."""
    dump = str(CAPTURE / "mdf-c-d31.kdump")
    prog = drgn.Program()
    prog.set_core_dump(dump)
    r = inspect(prog, list_all=True)
    assert r.exit_code == 0
    s = r.report["smmus"][0]
    assert s["table"]["base"] == "0x431be000" and {v["decision"] for v in s["verdicts"].values()} == {"adopt"}
    p = run_cli("inspect", dump, "--format", "json", "--all")
    same_evidence(r.report, json.loads(p.stdout))


@pytest.mark.skipif(not have_captures(), reason="needs ../shared/captures")
def test_drgn_script():
    script = ROOT / "smmu_forensics" / "drgn_inspect.py"
    drgn_cli = Path(sys.executable).with_name("drgn")
    p = subprocess.run([str(drgn_cli), "-q", "-c", str(CAPTURE / "mdf-c-d31.kdump"), str(script), "--format", "markdown"],
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()[-500:]
    assert b"| latest | ADOPT" in p.stdout or b"ADOPT" in p.stdout.split(b"\n## ", 1)[0]


def test_cli_and_api_never_import_drgn():
    code = ("import sys, smmu_forensics.cli, smmu_forensics.api; from smmu_forensics import inspect; "
            "inspect('fixtures/qemu-panic-carved.elf'); print('drgn' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert p.stdout.strip() == b"False", p.stderr


def test_api_rejects_what_it_cannot_read():
    with pytest.raises(TypeError):
        inspect(42)

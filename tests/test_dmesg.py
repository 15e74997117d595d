"""dmesg: the crashed kernel's printk ring, checked against what the same kernel printed on its
serial console (an independent record of the same messages)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import CAPTURE, CARVED, SHARED, needs_captures, run_cli

LINE = re.compile(r"^\[ *\d+\.\d{6}\] .*")


def console_lines(path) -> list[str]:
    return [m.group(0).rstrip("\r") for m in map(LINE.match, path.read_text(errors="replace").splitlines()) if m]


@needs_captures
@pytest.mark.parametrize("name", ["mdf-c-d31.kdump", "mdf-l-d31.kdump", "qemu-kdump-zlib.flat"])
def test_dmesg_matches_the_serial_console(name):
    p = run_cli("dmesg", str(CAPTURE / name))
    assert p.returncode == 0, p.stderr
    got = p.stdout.decode().splitlines()
    want = console_lines(CAPTURE / "console.log")
    missing = [w for w in want if w not in set(got)]
    assert len(want) > 300 and not missing, missing[:5]  # every console line, timestamp to the microsecond
    assert "[    4.937587] arm-smmu-v3 9050000.smmuv3: ias 44-bit, oas 44-bit (features 0x00008305)" in got


@needs_captures
def test_dmesg_json_on_the_acpi_kdump_capture():
    cap = SHARED / "captures" / "acpi-kdump" / "kdump-mdf-l-d31.kdump"
    p = run_cli("dmesg", str(cap), "--format", "json")
    rep = json.loads(p.stdout)
    smmu = [r for r in rep["records"] if "features 0x00008305" in r["text"]]
    assert smmu and smmu[0]["device"] == "+platform:arm-smmu-v3.0.auto" and smmu[0]["subsystem"] == "platform"
    seqs = [r["seq"] for r in rep["records"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_dmesg_without_the_ring_is_exit_4():
    p = run_cli("dmesg", str(CARVED))
    assert p.returncode == 4 and p.stderr.count(b"\n") == 1 and b"kernel log not readable" in p.stderr

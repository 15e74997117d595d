"""At 80 columns nothing that identifies evidence is cut: every address, raw value, rule ID and
state that a 200-column report shows whole is whole at 80 too (tables fall back to a list)."""

from __future__ import annotations

import re

import pytest

from conftest import CARVED, SCENARIOS, run_cli

HEX = re.compile(r"0x[0-9a-fA-F]+")
WORD = re.compile(r"[A-Z][A-Z0-9]+(?:-[A-Z0-9]+)+")  # rule and finding IDs: L1-SPAN, SCAN-CD-ASID, DMA-WRITES-TABLES


def render(width: int, *args: str) -> str:
    p = run_cli(*args, env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert p.returncode in (0, 1, 4), p.stderr
    return p.stdout.decode()


def tokens(text: str) -> set[str]:
    return set(HEX.findall(text)) | set(WORD.findall(text))


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    out = {}
    d = tmp_path_factory.mktemp("w")
    for name in ("l1-span", "dma-writes-l2", "scan-cd-asid", "l2-excluded"):
        path = d / f"{name}.elf"
        p = run_cli("synth", str(SCENARIOS / f"{name}.yaml"), "-o", str(path))
        assert p.returncode == 0, p.stderr
        out[name] = str(path)
    return out


@pytest.mark.parametrize("name", ["l1-span", "dma-writes-l2", "scan-cd-asid", "l2-excluded", "carved"])
@pytest.mark.parametrize("extra", [(), ("--all", "--rules", "all"), ("--sid", "8")])
def test_nothing_cut_at_80_columns(dumps, name, extra):
    dump = str(CARVED) if name == "carved" else dumps[name]
    wide, narrow = render(200, "inspect", dump, *extra), render(80, "inspect", dump, *extra)
    assert "…" not in narrow and "..." not in narrow.replace("... ", "")
    assert max(len(line) for line in narrow.splitlines()) <= 80
    missing = tokens(wide) - tokens(narrow)
    assert not missing, sorted(missing)[:10]
    assert tokens(wide)  # the check saw evidence at all


def test_info_and_dma_at_80_columns():
    dump = str(CARVED)
    for args in (("info", dump), ("dma", dump, "--sid", "8", "--iova", "0xffffa000"), ("discover", dump)):
        wide, narrow = render(200, *args), render(80, *args)
        assert "…" not in narrow
        assert tokens(wide) - tokens(narrow) == set(), args

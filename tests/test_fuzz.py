"""Mutation fuzzing: corrupted dumps of every format never end in an internal error (exit 5) or
an exception; each run is one of the documented outcomes, quickly.  Fixed seed, so it can fail
the same way twice."""

from __future__ import annotations

import contextlib
import io
import random
import sys
import time

import pytest

from conftest import SCENARIOS
from smmu_forensics.cli import main
from smmu_forensics.synth.scenario import build_scenario, load, write_outputs

FORMATS = ["elf", "kdump-zlib", "kdump-lzo", "kdump-zstd", "kdump-snappy", "flat-zlib", "lime"]


def run(args: list[str]) -> int | str:
    argv = sys.argv
    sys.argv = ["smmu-forensics", *args]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    except BaseException as e:  # noqa: BLE001 - the point of the test
        return f"exception {e!r}"
    finally:
        sys.argv = argv


@pytest.mark.parametrize("seed", [11, 12])
def test_mutated_dumps(tmp_path, seed):
    built = build_scenario(load(str(SCENARIOS / "adopt-2lvl.yaml")))
    built.image.ram = [(0x40000000, 0x800000)]
    for fmt in FORMATS:
        write_outputs(built, str(tmp_path / f"base.{fmt}"), fmt)
    regs = str(tmp_path / "base.elf.smmu.json")
    rnd = random.Random(seed)
    seen: dict[object, int] = {}
    for _ in range(120):
        fmt = rnd.choice(FORMATS)
        data = bytearray((tmp_path / f"base.{fmt}").read_bytes())
        for _ in range(rnd.randint(1, 8)):
            pos = rnd.randrange(min(len(data), 0x40000)) if rnd.random() < 0.8 else rnd.randrange(len(data))
            data[pos] = rnd.randrange(256)
        if rnd.random() < 0.2:
            data = data[: rnd.randrange(len(data))]
        m = tmp_path / "m"
        m.write_bytes(bytes(data))
        for args in (["info", str(m), "--format", "json"], ["inspect", str(m), "--regs", regs, "--format", "json", "--rules", "all"],
                     ["xp", str(m), "0x40100000", "--len", "4096"]):
            t = time.monotonic()
            code = run(args)
            assert time.monotonic() - t < 10, (fmt, args[0])
            assert code in (0, 1, 3, 4), (fmt, args[0], code)
            seen[code] = seen.get(code, 0) + 1
    assert seen.get(3) and seen.get(0)  # the mutations did break some files, and left others readable


def test_random_tables_and_registers(tmp_path):
    """Random register values over memory full of random tables: bounded time, a verdict, every
    renderer copes.  (The first version of this fuzz found three walks that took over a minute.)"""
    from rich.console import Console

    from smmu_forensics.analysis import analyze
    from smmu_forensics.dumps.sniff import open_dump
    from smmu_forensics.report import markdown, model, terminal
    from smmu_forensics.smmu.registers import Registers
    from smmu_forensics.synth.image import MemoryImage
    from smmu_forensics.synth.writers import write_elf

    rnd = random.Random(5)
    img = MemoryImage()
    img.ram = [(0x40000000, 0x400000)]
    for a in range(0x40000000, 0x40400000, 0x1000):
        if rnd.random() < 0.7:
            words = []
            for _ in range(512):
                r = rnd.random()
                w = 0 if r < 0.3 else ((rnd.randrange(0x40000000, 0x40400000) & ~0x3F) | rnd.randrange(64) | rnd.getrandbits(5) << 59
                                       if r < 0.6 else rnd.getrandbits(64))
                words.append(w)
            img.write(a, b"".join(w.to_bytes(8, "little") for w in words))
    write_elf(img, str(tmp_path / "r.elf"))
    with open_dump(str(tmp_path / "r.elf")) as mem:
        for _ in range(8):
            regs = Registers.from_mapping({
                "idr0": rnd.getrandbits(32), "idr1": rnd.getrandbits(32), "idr5": rnd.getrandbits(32), "cr0": 0xD, "gerror": 0,
                "strtab_base": rnd.choice([0x40000000, rnd.randrange(0x40000000, 0x40400000) & ~0x3F, rnd.getrandbits(64)]),
                "strtab_base_cfg": rnd.choice([rnd.getrandbits(32), 0x10200 | rnd.randrange(8, 26), rnd.randrange(64)]),
            })
            t = time.monotonic()
            rep = model.build(analyze(mem, [regs], ["v6", "v7", "latest"]), list_all=rnd.random() < 0.5)
            s = rep["smmus"][0]
            markdown.render(rep)
            terminal.render(rep, Console(file=io.StringIO(), width=120))
            assert time.monotonic() - t < 30, regs.values
            assert all(v["decision"] in ("adopt", "reset", "no-adopt", "unknown") for v in s["verdicts"].values())

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

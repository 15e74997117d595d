"""Coverage-guided fuzzing of the entry points a hostile dump reaches (atheris, libFuzzer).

    python fuzz/fuzz.py TARGET [libFuzzer options]      # e.g. -max_total_time=600 -rss_limit_mb=1024
    python fuzz/fuzz.py --seeds DIR                      # write the seed corpus (synth dumps, register files, scenarios)

Targets: ``dump`` (sniff + every reader: info, ranges, reads), ``regs`` (register files),
``scenario`` (scenario files, parsed, checked and built in memory, at most 64 MiB of RAM), ``inspect`` (a dump through the whole
pipeline with fixed registers, rendered as text, Markdown and JSON), ``dmesg`` (the printk/log_buf
readers and discovery over fuzzed memory).  A run fails on any exception other than the
documented refusals (DumpError, UsageError, MemoryMissing); crashes are written as
``crash-*`` files under -artifact_prefix and become regression tests (tests/test_fuzz_regressions.py).
"""

from __future__ import annotations

import io
import json
import operator
import os
import sys
import tempfile

import atheris
from atheris.version_dependent import CMP_OP_SHIFT_AMOUNT

_NATIVE_CMP = atheris._trace_cmp
_CMP_OPS = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)  # dis.cmp_op order
_TRACED = (int, bool, bytes, str, float)


def _trace_cmp(left, right, op, counter, is_const):  # noqa: ANN001, ANN202
    """atheris 3.0's native ``_trace_cmp`` leaks the result of a comparison that is not a bool: every
    ``array == value`` over a numpy chunk stayed alive (25 MB per input in the discovery scan, the
    ``dmesg`` target's RSS reached 2 GB after 111 runs; tracemalloc shows the arrays).  libFuzzer can
    only use integer and byte-string comparisons anyway, so only those reach it."""
    if type(left) in _TRACED and type(right) in _TRACED:
        return _NATIVE_CMP(left, right, op, counter, is_const)
    return _CMP_OPS[op >> CMP_OP_SHIFT_AMOUNT](left, right)


def _run(fn):  # noqa: ANN001, ANN202
    """Instrumented code looks ``atheris._trace_cmp`` up on the module at every comparison, and
    ``atheris.Fuzz()`` puts the native one back when libFuzzer starts: re-point it on each input."""

    def one(data: bytes) -> None:
        if atheris._trace_cmp is not _trace_cmp:
            atheris._trace_cmp = _trace_cmp
        fn(data)

    return one

with atheris.instrument_imports():
    from smmu_forensics.analysis import analyze, discover_registers
    from smmu_forensics.dumps.base import MemoryMissing
    from smmu_forensics.dumps.sniff import open_dump
    from smmu_forensics.errors import ForensicsError
    from smmu_forensics.report import jsonout, markdown, model
    from smmu_forensics.smmu.registers import Registers, load_register_file
    from smmu_forensics.synth.scenario import build_scenario
    from smmu_forensics.synth.scenario import load as load_scenario

EXPECTED = (ForensicsError, MemoryMissing)
os.environ.setdefault("SMMU_FORENSICS_SYNTH_MAX_RAM", str(64 << 20))
TMP = tempfile.mkdtemp(prefix="smmu-fuzz-")
REGS = Registers.from_mapping({"strtab_base": 0x40000000_40100000, "strtab_base_cfg": 0x10210, "idr0": 0x0D40101B,
                               "idr1": 0x02730010, "cr0": 0xD, "gerror": 0, "gerrorn": 0})


def _file(data: bytes, suffix: str = "") -> str:
    path = os.path.join(TMP, "input" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path


def target_dump(data: bytes) -> None:
    try:
        with open_dump(_file(data)) as mem:
            mem.info()
            for r in mem.ranges()[:8]:
                mem.read_partial(r.start, min(r.size, 1 << 16))
            mem.read_partial(0x40100000, 4096)
            mem.vmcoreinfo()
    except EXPECTED:
        pass


def target_regs(data: bytes) -> None:
    try:
        load_register_file(_file(data, ".json"))
    except EXPECTED:
        pass


def target_scenario(data: bytes) -> None:
    try:
        build_scenario(load_scenario(_file(data, ".yaml")))
    except EXPECTED:
        pass


def target_inspect(data: bytes) -> None:
    try:
        with open_dump(_file(data)) as mem:
            a = analyze(mem, [REGS], ["latest", "v7", "v6"], max_stes=1 << 14)
            rep = model.build(a, list_all=True)
            markdown.render(rep)
            jsonout.write(rep, io.StringIO(), pretty=False)
    except EXPECTED:
        pass


def target_dmesg(data: bytes) -> None:
    try:
        with open_dump(_file(data)) as mem:
            discover_registers(mem)
    except EXPECTED:
        pass


TARGETS = {"dump": target_dump, "regs": target_regs, "scenario": target_scenario, "inspect": target_inspect,
           "dmesg": target_dmesg}


def write_seeds(folder: str) -> None:
    """Small real-format inputs per target: synth dumps of a few scenarios, register files, scenarios."""
    from smmu_forensics.synth.scenario import build_scenario, write_outputs

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "scenarios")
    for t in TARGETS:
        os.makedirs(os.path.join(folder, t), exist_ok=True)
    for name in ("adopt-2lvl", "linear-adopt", "scan-cd-asid", "l1-span"):
        src = os.path.join(root, name + ".yaml")
        with open(src, "rb") as f:
            open(os.path.join(folder, "scenario", name + ".yaml"), "wb").write(f.read())
        built = build_scenario(load_scenario(src))
        for fmt in ("elf", "kdump-zlib", "kdump-none", "flat-zlib", "lime"):
            out = os.path.join(TMP, f"{name}.{fmt}")
            write_outputs(built, out, fmt)
            blob = open(out, "rb").read()
            if len(blob) <= 1 << 20:
                for t in ("dump", "inspect", "dmesg"):
                    open(os.path.join(folder, t, f"{name}.{fmt}"), "wb").write(blob)
            side = out + ".smmu.json"
            if os.path.exists(side):
                open(os.path.join(folder, "regs", f"{name}.json"), "wb").write(open(side, "rb").read())
    open(os.path.join(folder, "regs", "nested.json"), "w").write(json.dumps({"smmus": [{"name": "x", "strtab_base": "0x1"}]}))


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--seeds":
        write_seeds(sys.argv[2])
        return
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: fuzz.py {{{','.join(TARGETS)}}} [libFuzzer options] | --seeds DIR")
    fn = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], _run(fn))
    atheris.Fuzz()


if __name__ == "__main__":
    main()

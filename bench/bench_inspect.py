#!/usr/bin/env python3
"""inspect on a maximal 2-level table vs decoding the same STEs one at a time through Construct.

The table: 2^17 L1 descriptors (LOG2SIZE 25), 4096 populated L2 tables, 1,048,576 valid STEs,
about one in a hundred translating through stage 1 (each with its own CD), the rest abort, as
Linux leaves them; in an ELF dump built by `synth`.  Prints: synth build time, inspect time and
peak memory (JSON output, a fresh process), the Construct time (measured on a sample, scaled to
all STEs, both printed) and the ratio.  Not a timed test: `make bench`.

    .venv/bin/python bench/bench_inspect.py [--sample N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from smmu_forensics.dumps.sniff import open_dump  # noqa: E402
from smmu_forensics.smmu import fields as L  # noqa: E402
from smmu_forensics.smmu import schemas  # noqa: E402
from smmu_forensics.synth.scenario import build_scenario, write_outputs  # noqa: E402

N_L2 = 4096
STRIDE = (1 << 17) // N_L2  # populated L1 entries spread over the whole L1 table
L1_BASE, L2_BASE, CD_BASE, PGT = 0x40000000, 0x40100000, 0x44200000, 0x44400000


def scenario() -> dict:
    stes = []
    cds = []
    k = 0
    for j in range(N_L2):
        grp = j * STRIDE
        for off in range(0, 256, 100 if j % 2 else 97):  # ~1% translate
            sid = (grp << 8) | off
            cd = CD_BASE + 64 * k
            stes.append({"sid": sid, "preset": "s1", "cd": cd})
            cds.append({"addr": cd, "cds": [{"ssid": 0, "asid": 1 + k % 65000, "ttb0": PGT}]})
            k += 1
    return {
        "name": "maximal",
        "machine": {"ram": [{"start": 0x40000000, "size": 0x8000000}]},
        "smmus": [{
            "name": "smmu0", "base": 0x9050000,
            "registers": {"idr1": 0x02730019},  # SIDSIZE 25
            "stream_table": {"format": "2lvl", "base": L1_BASE, "log2size": 25, "l2_base": L2_BASE,
                             "stes": stes, "l2_for": [j * STRIDE for j in range(N_L2)]},
            "cd_tables": cds,
            "pgtables": [{"root": PGT, "pool": PGT + 0x1000, "map": [{"iova": 0x10000, "pa": 0x47000000}]}],
        }],
    }


def run(cmd: list[str]) -> tuple[float, float, bytes, int]:
    """(seconds, peak RSS in MB of that process alone, stdout, exit code)."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return dt, ru.ru_maxrss / 1024, out.read(), p.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=16384, help="STEs decoded one at a time through Construct")
    ap.add_argument("--keep", help="write the dump here and keep it")
    args = ap.parse_args()
    d = args.keep or tempfile.mkdtemp(prefix="smmu-bench-")
    os.makedirs(d, exist_ok=True)
    dump = os.path.join(d, "maximal.elf")

    t = time.perf_counter()
    built = build_scenario(scenario())
    write_outputs(built, dump, "elf")
    t_synth = time.perf_counter() - t
    n_s1 = len(built.smmus) and sum(1 for _ in scenario()["smmus"][0]["stream_table"]["stes"])
    print(f"synth: 1,048,576 STEs ({n_s1} stage-1) + ELF written in {t_synth:.2f} s")

    base = [sys.executable, "-m", "smmu_forensics"]
    for flag in ("--version", "--help"):
        t_cli = min(run([*base, flag])[0] for _ in range(5))
        print(f"smmu-forensics {flag}: {t_cli * 1000:.0f} ms (best of 5, whole process; python -c pass: "
              f"{min(run([sys.executable, '-c', 'pass'])[0] for _ in range(5)) * 1000:.0f} ms)")
    latest = base + ["inspect", dump, "--format", "json", "--rules", "latest"]
    t_latest = min(run(latest)[0] for _ in range(5))
    print(f"inspect --format json --rules latest (the maximal table): {t_latest:.2f} s (best of 5, whole process)")
    cli = base + ["inspect", dump, "--format", "json", "--rules", "all"]
    best, peak_mb, out = None, 0.0, b""
    for _ in range(3):
        dt, rss, out, code = run(cli)
        best = dt if best is None else min(best, dt)
        peak_mb = max(peak_mb, rss)
    rep = json.loads(out)
    s = rep["smmus"][0]
    assert s["table"]["ste_summary"]["valid"] == 1 << 20, s["table"]["ste_summary"]
    assert s["verdicts"]["latest"]["decision"] == "adopt", s["verdicts"]["latest"]
    print(f"inspect --format json --rules all: {best:.2f} s (best of 3, whole process), peak RSS {peak_mb:.0f} MB, "
          f"exit {code}, {len(s['table']['stes'])} STEs listed")
    dt, rss, out, code = run(cli + ["--all"])
    print(f"inspect --format json --rules all --all: {dt:.2f} s, peak RSS {rss:.0f} MB, {len(out) / 1e6:.0f} MB of JSON")

    # the baseline: the same STEs, read and decoded one at a time through the Construct schema
    with open_dump(dump) as mem:
        addrs = []
        for j in range(N_L2):
            base = L2_BASE + j * L.STRTAB_L2_BYTES
            addrs += [base + 64 * i for i in range(256)]
        sample = addrs[:: max(1, len(addrs) // args.sample)][: args.sample]
        t = time.perf_counter()
        for a in sample:
            schemas.parse(L.STE, mem.read(a, 64))
        dt = time.perf_counter() - t
    full = dt * len(addrs) / len(sample)
    print(f"Construct one STE at a time: {dt:.2f} s for {len(sample)} STEs -> {full:.1f} s for all {len(addrs)} (scaled)")
    print(f"ratio: inspect is {full / best:.0f}x faster than the one-at-a-time Construct path")
    if not args.keep:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""inspect with no register file (discovery) on the real captures, against reading them once.

Prints, per capture: the time of `inspect DUMP --format json` with no register input (a fresh
process, the dump linked alone into an empty folder), its peak RSS, and the ratio against the
baseline measured in the same run: `cat FILE > /dev/null` on a warm cache for the ELF core, and
decompressing every present page once for kdump-compressed files.  Needs ../shared/captures
(the ELF is unpacked once under the temp folder).  Not a timed test: `make bench`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench_inspect import run  # noqa: E402
from smmu_forensics.dumps.sniff import open_dump  # noqa: E402

CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"


def elf_capture() -> Path | None:
    out = Path(tempfile.gettempdir()) / "check-captures" / "qemu-panic" / "qemu-dump.elf"
    if not out.exists():
        src = CAPTURES / "qemu-panic" / "qemu-dump.elf.zst"
        if not src.exists():
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["zstd", "-q", "-f", "-d", "--long=31", str(src), "-o", str(out)], check=True)
    return out


def best(cmd: list[str], n: int = 3) -> tuple[float, float]:
    runs = [run(cmd) for _ in range(n)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def decompress_all(path: Path) -> float:
    t = time.perf_counter()
    with open_dump(str(path)) as mem:
        for _ in mem.scan_chunks():
            pass
    return time.perf_counter() - t


def scan_alone(path: Path) -> float:
    """The one pass over memory (driver copies, FDT magics, table shapes), without process start-up."""
    from smmu_forensics.discover.driver import scan

    t = time.perf_counter()
    with open_dump(str(path)) as mem:
        scan(mem)
    return time.perf_counter() - t


def main() -> None:
    if not (CAPTURES / "qemu-panic").exists():
        print("bench_discover: ../shared/captures not present; skipped")
        return
    cases = [(elf_capture(), "cat"), (CAPTURES / "qemu-panic" / "mdf-c-d31.kdump", "decompress"),
             (CAPTURES / "qemu-panic" / "mdf-l-d31.kdump", "decompress"), (CAPTURES / "acpi-kdump" / "kdump-mdf-l-d31.kdump", "decompress")]
    for dump, baseline in cases:
        if dump is None:
            continue
        with tempfile.TemporaryDirectory() as d:
            link = Path(d) / ("dump" + dump.suffix)
            link.symlink_to(dump)
            t, rss = best([sys.executable, "-m", "smmu_forensics", "inspect", str(link), "--format", "json"])
        if baseline == "cat":
            base = min(run(["sh", "-c", f"cat '{dump}' > /dev/null"])[0] for _ in range(3))
        else:
            base = min(decompress_all(dump) for _ in range(2))
        sc = min(scan_alone(dump) for _ in range(2))
        print(f"{dump.parent.name}/{dump.name}: inspect with no registers {t:.2f} s, peak RSS {rss:.0f} MB; "
              f"{'cat' if baseline == 'cat' else 'decompressing every present page'} {base:.2f} s; ratio {t / base:.1f}x; "
              f"the discovery pass alone (in process, no start-up) {sc:.2f} s, {sc / base:.1f}x")


if __name__ == "__main__":
    main()

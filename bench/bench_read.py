#!/usr/bin/env python3
"""Random page reads from the real kdump-compressed captures: smmu-forensics vs drgn (libkdumpfile).

Both read the same random present pages, each once, from a freshly opened dump (cold caches),
in the same run.  Prints pages/s for both and the ratio.  Not a timed test: `make bench`.

    .venv/bin/python bench/bench_read.py [--pages N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from smmu_forensics.dumps.base import PageState  # noqa: E402
from smmu_forensics.dumps.sniff import open_dump  # noqa: E402

CAP = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "captures", "qemu-panic")


def present_pages(path: str) -> list[int]:
    with open_dump(path) as mem:
        ps = mem.page_size
        return [a for r in mem.ranges() if r.state is PageState.PRESENT for a in range(r.start, r.end, ps)]


def ours(path: str, addrs: list[int], ps: int) -> float:
    t = time.perf_counter()
    with open_dump(path) as mem:
        for a in addrs:
            mem.read(a, ps)
    return time.perf_counter() - t


def drgn_read(path: str, addrs: list[int], ps: int) -> float | None:
    try:
        import drgn
    except ImportError:
        return None
    t = time.perf_counter()
    prog = drgn.Program()
    prog.set_core_dump(path)
    for a in addrs:
        prog.read(a, ps, True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not os.path.isdir(CAP):
        print("bench_read: ../shared/captures not present; nothing to measure")
        return
    print(f"random reads of {args.pages} distinct present pages, each once, cold open; best of {args.repeat}")
    for name in ("mdf-c-d31.kdump", "mdf-l-d31.kdump"):
        path = os.path.join(CAP, name)
        pages = present_pages(path)
        rnd = random.Random(args.seed)
        addrs = rnd.sample(pages, min(args.pages, len(pages)))
        with open_dump(path) as mem:
            ps = mem.page_size
            # same bytes first: a fast wrong answer is no answer
            import drgn

            prog = drgn.Program()
            prog.set_core_dump(path)
            for a in addrs[:200]:
                assert mem.read(a, ps) == prog.read(a, ps, True), hex(a)
        t_ours = min(ours(path, addrs, ps) for _ in range(args.repeat))
        runs = [drgn_read(path, addrs, ps) for _ in range(args.repeat)]
        t_drgn = min(r for r in runs if r is not None) if all(r is not None for r in runs) else None
        line = f"{name:18s} smmu-forensics {len(addrs) / t_ours:10.0f} pages/s"
        if t_drgn:
            line += f" | drgn/libkdumpfile {len(addrs) / t_drgn:10.0f} pages/s | ratio {t_drgn / t_ours:5.2f}x"
        print(line)


if __name__ == "__main__":
    main()

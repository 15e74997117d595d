#!/usr/bin/env python3
"""Carve the bundled fixture from the real capture in ../shared/captures/qemu-panic.

Copies the real bytes of the stream table, its L2 tables, the context descriptors and the IO page
tables (64 KiB windows around each) into fixtures/qemu-panic-carved.elf, with the capture's real
VMCOREINFO note, its registers as the sidecar, and the ground truth trimmed to what the fixture
holds.  Run once by a developer; the output is committed.

    .venv/bin/python tools/carve_fixture.py ../shared/captures/qemu-panic/mdf-c-d31.kdump
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from smmu_forensics.dumps.sniff import open_dump  # noqa: E402
from smmu_forensics.synth.image import MemoryImage  # noqa: E402
from smmu_forensics.synth.writers import write_elf  # noqa: E402

WINDOWS = [  # 64 KiB-aligned windows holding every structure of the ground truth
    (0x431B0000, 0x20000),  # L1 table 0x431be000, CD 0x431cd000
    (0x432D0000, 0x10000),  # page table 0x432d9000
    (0x48200000, 0x10000),  # page table 0x4820e000
    (0x482C0000, 0x40000),  # page tables 0x482c9000 0x482eb000 0x482ec000 0x482ed000 0x482f3000
    (0x48300000, 0x30000),  # page tables 0x48308000 0x48309000, CD 0x48323000
    (0x7AC60000, 0x10000),  # L2 tables 0x7ac60000 0x7ac64000
]


def main() -> None:
    src = sys.argv[1]
    cap = os.path.dirname(os.path.abspath(src))
    here = os.path.join(os.path.dirname(__file__), "..", "fixtures")
    mem = open_dump(src)
    img = MemoryImage(page_size=4096)
    img.vmcoreinfo = dict(mem.vmcoreinfo())
    for start, size in WINDOWS:
        r = mem.read_partial(start, size)
        img.ram.append((start, size))
        for h in r.holes:  # pages makedumpfile filtered stay excluded in the fixture
            img.excluded.append((h.start, h.end - h.start))
        img.write(start, r.data)
    out = os.path.join(here, "qemu-panic-carved.elf")
    write_elf(img, out)
    regs = json.load(open(os.path.join(cap, "registers.json")))
    json.dump(regs, open(out + ".smmu.json", "w"), indent=1)
    truth = json.load(open(os.path.join(cap, "ground_truth.json")))
    keep = {k: truth[k] for k in ("guest_kernel", "smmu_base", "pci_devices", "stream_table", "io_pgtables")}
    keep["carved_from"] = os.path.basename(src)
    keep["windows"] = [[hex(a), hex(n)] for a, n in WINDOWS]
    json.dump(keep, open(os.path.join(here, "qemu-panic-carved.truth.json"), "w"), indent=1)
    print(out, os.path.getsize(out))


if __name__ == "__main__":
    main()

"""What is wrong beyond the kernel's checks, and what in-flight DMA could reach.

Checks suggested by the series' reviewers and the spec (adopt-rules.md section 5), one family per
module: :mod:`.registers` (register consistency), :mod:`.geometry` (geometry the hardware reads
differently from the kernel, tables missing from the dump), :mod:`.l1` (descriptors the kernel
does not look at), :mod:`.stes` (illegal STEs, VMID aliasing, bypass), :mod:`.cds` (CDs, ASID
aliasing) and :mod:`.dma` (page-table problems, DMA able to rewrite the adopted tables).  They
judge a decoded :class:`~smmu_forensics.smmu.snapshot.Snapshot` and never read memory.

Each finding has a stable ``id``, a :class:`Severity`, ``where`` (register, L1 index, SID or
address) and a one-line ``message``.
"""

from __future__ import annotations

from smmu_forensics.rules.findings import cds, dma, geometry, l1, registers, stes
from smmu_forensics.rules.findings.collect import Collector, Finding, Severity
from smmu_forensics.smmu.snapshot import Snapshot

__all__ = ["Finding", "Severity", "find"]


def find(snap: Snapshot) -> list[Finding]:
    """Every finding for one SMMU, worst first."""
    out = Collector()
    registers.check(snap.regs, out)
    t = snap.table
    registers.against_dump(snap.regs, snap.recorded, t, out)
    if t is not None:
        geometry.check(snap.regs, t, out)
        l1.check(t, out)
        stes.check(snap.regs, t, out)
        cds.check(t, snap.reach, out)
        dma.check(t, snap.reach, out)
    return out.close()

"""Physical memory through drgn's own reader: the layer for a ``drgn.Program`` (a vmcore opened
with ``drgn -c``, or a live kernel).

drgn is optional: this module never imports it at load time, and nothing else imports this module
unless a caller hands over a ``drgn.Program``.

Bytes come from ``prog.read(addr, size, physical=True)``; a page drgn cannot read (``FaultError``:
excluded by makedumpfile, outside every segment) is a typed :class:`~.base.Hole`, never zeros.
drgn does not list a dump's physical ranges, so they come from (in order) the ranges given, the
dump file's own headers read by this package's format layers (``prog.core_dump_path``), or
``/proc/iomem``'s "System RAM" for a live kernel.  VMCOREINFO is drgn's ``prog["VMCOREINFO"]``.
"""

from __future__ import annotations

import bisect
from typing import Any

from smmu_forensics.dumps.base import DumpInfo, Hole, MemRange, PageState, PartialRead, PhysicalMemory, merge_ranges, parse_vmcoreinfo

__all__ = ["DrgnMemory", "iomem_ranges"]

#: a read that faults is retried page by page; beyond this many pages the rest is one hole
MAX_PAGES_PROBED = 1 << 16


def iomem_ranges(text: str) -> list[MemRange]:
    """The top-level "System RAM" ranges of ``/proc/iomem`` (inclusive ends, hex).

    >>> iomem_ranges("40000000-bfffffff : System RAM\\n  40210000-4177ffff : Kernel code\\n09050000-0906ffff : smmu\\n")
    [MemRange(start=1073741824, end=3221225472, state=<PageState.PRESENT: 'present'>)]
    """
    out = []
    for line in text.splitlines():
        if line[:1].isspace() or not line.rstrip().endswith(": System RAM"):
            continue
        span = line.split(":", 1)[0].strip()
        a, _, b = span.partition("-")
        try:
            out.append(MemRange(int(a, 16), int(b, 16) + 1))
        except ValueError:
            continue
    return merge_ranges(out)


class DrgnMemory(PhysicalMemory):
    """A ``drgn.Program``'s physical memory as a :class:`PhysicalMemory`."""

    format_name = "drgn"

    def __init__(self, prog: Any, ranges: list[MemRange] | None = None) -> None:
        import drgn  # the caller has a Program, so drgn is installed

        self.prog, self._fault = prog, drgn.FaultError
        self.path = str(prog.core_dump_path or "live kernel (drgn)")
        self._notes: list[str] = []
        self._vmci: dict[str, str] | None = None
        self._ranges = ranges if ranges is not None else self._find_ranges()
        self._starts = [r.start for r in self._ranges]
        ps = self.vmcoreinfo().get("PAGESIZE", "")
        self.page_size = int(ps) if ps.isdigit() and int(ps) in (4096, 16384, 65536) else 4096

    def _find_ranges(self) -> list[MemRange]:
        path = self.prog.core_dump_path
        if path and path != "/proc/kcore":
            from smmu_forensics.dumps.sniff import open_dump

            try:
                with open_dump(path) as mem:
                    self._notes.append(f"physical ranges from the dump file's headers ({mem.format_name})")
                    return mem.ranges()
            except Exception as exc:  # noqa: BLE001 - any reader refusal: fall back, and say so
                self._notes.append(f"the dump file's headers could not be read here ({exc}); ranges unknown")
        try:
            with open("/proc/iomem") as f:
                r = iomem_ranges(f.read())
            if r and any(x.start for x in r):
                self._notes.append("physical ranges from /proc/iomem (System RAM)")
                return r
        except OSError:
            pass
        self._notes.append("no physical range list: only reads at known addresses work (no search of memory)")
        return []

    def vmcoreinfo(self) -> dict[str, str]:
        if self._vmci is None:
            try:
                self._vmci = parse_vmcoreinfo(self.prog["VMCOREINFO"].string_())
            except (LookupError, ValueError, self._fault):
                self._vmci = {}
        return self._vmci

    def ranges(self) -> list[MemRange]:
        return list(self._ranges)

    def page_state(self, addr: int) -> PageState:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._ranges[i].end:
            st = self._ranges[i].state
            if not st.readable:
                return st
        try:
            self.prog.read(addr, 1, True)
            return PageState.PRESENT
        except self._fault:
            return PageState.EXCLUDED if i >= 0 and addr < self._ranges[i].end else PageState.ABSENT

    def read_partial(self, addr: int, size: int) -> PartialRead:
        if size <= 0:
            return PartialRead(addr, b"")
        try:
            return PartialRead(addr, self.prog.read(addr, size, True))
        except (self._fault, ValueError, OverflowError):
            pass
        ps = self.page_size
        out = bytearray(size)
        holes: list[Hole] = []
        a, end, probed = addr, addr + size, 0
        while a < end:
            n = min(end, (a // ps + 1) * ps) - a
            if probed >= MAX_PAGES_PROBED:
                holes.append(Hole(a, end, PageState.ABSENT, "not probed: too many faulting pages in one read"))
                break
            probed += 1
            try:
                out[a - addr : a - addr + n] = self.prog.read(a, n, True)
            except (self._fault, ValueError, OverflowError) as exc:
                st = self.page_state(a)
                st = st if not st.readable else PageState.ABSENT
                if holes and holes[-1].end == a and holes[-1].state == st:
                    holes[-1] = Hole(holes[-1].start, a + n, st, holes[-1].reason)
                else:
                    holes.append(Hole(a, a + n, st, f"drgn: {str(exc).split(':', 1)[-1].strip()}"))
            a += n
        return PartialRead(addr, bytes(out), holes)

    def info(self) -> DumpInfo:
        return DumpInfo(self.path, self.format_name, None, self.page_size, self.ranges(),
                        {"present": sum(r.size for r in self._ranges if r.state.readable) // self.page_size},
                        False, [], self.vmcoreinfo(), list(self._notes))

"""Models and text for ``info`` (what a dump holds) and ``xp`` (physical memory as hex).

>>> from smmu_forensics.dumps.base import Hole, PageState, PartialRead
>>> r = PartialRead(0x1000, bytes(range(8)) + bytes(8), [Hole(0x1008, 0x1010, PageState.ABSENT, "past RAM")])
>>> print(hexdump(r), end="")
0000000000001000:  00 01 02 03 04 05 06 07  ?? ?? ?? ?? ?? ?? ?? ??  ........????????
missing: 0x1008-0x1010 absent (past RAM)
>>> xp_model(r)["hex_with_holes"][:20]
'0001020304050607????'
"""

from __future__ import annotations

from typing import Any

from smmu_forensics.dumps.base import VMCOREINFO_HIGHLIGHTS, DumpInfo, PartialRead

__all__ = ["info_model", "xp_model", "hexdump"]


def info_model(inf: DumpInfo) -> dict[str, Any]:
    return {
        "path": inf.path,
        "format": inf.format,
        "codec": inf.codec,
        "page_size": inf.page_size,
        "ranges": [{"start": f"{r.start:#x}", "end": f"{r.end:#x}", "size": r.size, "state": r.state.value} for r in inf.ranges],
        "pages": inf.pages,
        "incomplete": inf.incomplete,
        "incomplete_reasons": inf.incomplete_reasons,
        "vmcoreinfo": {k: inf.vmcoreinfo[k] for k in VMCOREINFO_HIGHLIGHTS if k in inf.vmcoreinfo},
        "notes": inf.notes,
        "details": inf.details,
    }


def _holes(r: PartialRead) -> list[dict[str, Any]]:
    return [{"start": f"{h.start:#x}", "end": f"{h.end:#x}", "state": h.state.value, "reason": h.reason} for h in r.holes]


def _hex_holes(r: PartialRead) -> str:
    if not r.holes:
        return r.data.hex()
    return "".join("??" if r.missing(r.addr + i, 1) else f"{b:02x}" for i, b in enumerate(r.data))


def xp_model(r: PartialRead) -> dict[str, Any]:
    return {"addr": f"{r.addr:#x}", "len": len(r.data), "hex": r.data.hex() if not r.holes else None,
            "hex_with_holes": _hex_holes(r), "holes": _holes(r)}


def hexdump(r: PartialRead) -> str:
    """16 bytes a line, ``??`` for bytes the dump lacks, then the holes listed."""
    lines = []
    a, n = r.addr, len(r.data)
    for off in range(0, n, 16):
        line = r.data[off : off + 16]
        cells, text = [], []
        for i, b in enumerate(line):
            if r.missing(a + off + i, 1):
                cells.append("??")
                text.append("?")
            else:
                cells.append(f"{b:02x}")
                text.append(chr(b) if 32 <= b < 127 else ".")
        lines.append(f"{a + off:016x}:  {' '.join(cells[:8]):<23}  {' '.join(cells[8:]):<23}  {''.join(text)}\n")
    for h in _holes(r):
        lines.append(f"missing: {h['start']}-{h['end']} {h['state']} ({h['reason']})\n")
    return "".join(lines)

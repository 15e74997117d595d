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

__all__ = ["info_model", "xp_model", "hexdump", "detail_text", "LARGEST"]


#: ranges listed by default (``--ranges`` lists them all)
LARGEST = 10


def info_model(inf: DumpInfo, all_vmcoreinfo: bool = False) -> dict[str, Any]:
    """``info``'s JSON: every range (machines read it), a ``summary`` (bytes and ranges by state,
    the largest ranges), VMCOREINFO's highlights or, with ``all_vmcoreinfo``, every key."""
    by_state: dict[str, dict[str, int]] = {}
    for r in inf.ranges:
        e = by_state.setdefault(r.state.value, {"bytes": 0, "ranges": 0})
        e["bytes"] += r.size
        e["ranges"] += 1
    largest = sorted(inf.ranges, key=lambda r: (-r.size, r.start))[:LARGEST]
    row = lambda r: {"start": f"{r.start:#x}", "end": f"{r.end:#x}", "size": r.size, "state": r.state.value}  # noqa: E731
    return {
        "path": inf.path,
        "format": inf.format,
        "codec": inf.codec,
        "page_size": inf.page_size,
        "summary": {"n_ranges": len(inf.ranges), "by_state": by_state, "largest": [row(r) for r in largest],
                    "span": [f"{inf.ranges[0].start:#x}", f"{inf.ranges[-1].end:#x}"] if inf.ranges else None},
        "ranges": [row(r) for r in inf.ranges],
        "pages": inf.pages,
        "incomplete": inf.incomplete,
        "incomplete_reasons": inf.incomplete_reasons,
        "vmcoreinfo": dict(inf.vmcoreinfo) if all_vmcoreinfo else {k: inf.vmcoreinfo[k] for k in VMCOREINFO_HIGHLIGHTS if k in inf.vmcoreinfo},
        "vmcoreinfo_keys": len(inf.vmcoreinfo),
        "notes": inf.notes,
        "details": inf.details,
    }


def detail_text(v: object) -> str:
    """A detail value as people read it (no Python reprs).

    >>> detail_text({"sysname": "Linux", "release": "6.1.0"}), detail_text([1, "a"]), detail_text(None)
    ('sysname=Linux release=6.1.0', '1, a', '-')
    """
    if isinstance(v, dict):
        return " ".join(f"{k}={detail_text(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(detail_text(x) for x in v)
    return "-" if v is None else str(v)


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

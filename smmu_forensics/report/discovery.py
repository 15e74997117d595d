"""``discover``: every SMMU found in a dump, its registers with their sources, the devices behind
its StreamIDs; as text and as JSON.  Text from the dump is escaped."""

from __future__ import annotations

from typing import Any

from smmu_forensics.discover.smmus import Discovery
from smmu_forensics.report.escape import clean
from smmu_forensics.smmu.registers import Registers

__all__ = ["model", "text"]


def _hx(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def model(d: Discovery, regs: list[Registers | None]) -> dict[str, Any]:
    return {
        "kernel_log": d.log.source if d.log else None,
        "iort": _hx(d.iort_addr),
        "notes": d.notes,
        "smmus": [{
            "name": s.name,
            "base": _hx(s.base),
            "features": _hx(s.features),
            "coherent": s.coherent,
            "table_found": r is not None,
            "registers": r.json() if r is not None else None,
            "evidence": [{"what": e.what, "source": e.source, "addr": _hx(e.addr)} for e in s.evidence],
            "assumptions": s.assumptions,
            "devices": {f"{sid:#x}": names for sid, names in sorted(s.devices.items())},
        } for s, r in zip(d.smmus, regs)],
        "tables": [{"base": f"{t.base:#x}", "format": t.fmt.value, "log2size": t.log2size, "score": t.score,
                    "l1_to_l2": {str(i): f"{a:#x}" for i, a in t.l2}, "evidence": t.describe(),
                    "used_by": next((s.name for s in d.smmus if s.table is t or (s.copy and s.copy.strtab_dma == t.base)), None)}
                   for t in d.tables],
        "pci_devices": [{"bdf": p.bdf, "vendor": f"{p.vendor:#06x}", "device": f"{p.device:#06x}", "class": f"{p.cls:#08x}",
                         "driver": p.driver, "iommu_group": p.group, "rid": f"{p.rid:#x}"} for p in d.devices],
    }


def text(m: dict[str, Any]) -> str:
    out = [f"kernel log: {clean(m['kernel_log'] or 'not found')}"]
    if m["iort"]:
        out.append(f"IORT at {m['iort']}")
    out += [f"note: {clean(n)}" for n in m["notes"]]
    if not m["smmus"]:
        out.append("no SMMU found")
    for s in m["smmus"]:
        out += ["", f"SMMU {clean(s['name'])}  base {s['base'] or '?'}  coherent {s['coherent']}  "
                    f"{'stream table found' if s['table_found'] else 'no stream table found'}"]
        if s["registers"]:
            regs = s["registers"]
            out.append("  registers: " + ", ".join(f"{k.upper()}={v}" for k, v in regs.items()
                                                   if k not in ("name", "base", "coherent", "coherent_basis", "origin")))
        out += [f"  evidence ({clean(e['source'])}{' @ ' + e['addr'] if e['addr'] else ''}): {clean(e['what'])}" for e in s["evidence"]]
        out += [f"  assumed: {clean(a)}" for a in s["assumptions"]]
        out += [f"  SID {sid}: {clean(', '.join(names))}" for sid, names in s["devices"].items()]
    if m["tables"]:
        out += ["", "stream tables found by their shape (best first):"]
        out += [f"  score {t['score']:>3}  {clean(t['evidence'])}" + (f"  [{clean(t['used_by'])}]" if t["used_by"] else "  [not used]")
                for t in m["tables"]]
    return "\n".join(out) + "\n"

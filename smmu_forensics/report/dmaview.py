"""``smmu-forensics dma``: the model (JSON) and its text and Markdown renderings.

Plain lines, one fact each, so nothing is ever cut at 80 columns; every string that came from a
dump goes through :func:`escape.clean` (text) or :func:`escape.md` (Markdown).
"""

from __future__ import annotations

from typing import Any

from smmu_forensics.analysis import ContextAnswer, DmaAnswer
from smmu_forensics.report.escape import clean, md
from smmu_forensics.report.model import hx, range_row, range_text
from smmu_forensics.smmu.dmamap import size_name
from smmu_forensics.smmu.lpae import LPAE_S1, DescType, get
from smmu_forensics.smmu.pgtable import Step, Translation

__all__ = ["build", "text", "markdown"]


def _step_kind(s: Step) -> str:
    if s.desc is None:
        return "missing"
    t = get(LPAE_S1, s.desc, "TYPE")
    if t & 1 == 0:
        return "invalid"
    if t == DescType.BLOCK:
        return "block" if s.level in (1, 2) else "reserved"
    return "page" if s.level == 3 else "table"


def _translation(t: Translation) -> dict[str, Any]:
    return {
        "iova": hx(t.va), "pa": hx(t.pa), "size": t.size or None, "writable": t.writable if t.pa is not None else None,
        "fault": t.why or None,
        "steps": [{"level": s.level, "table": hx(s.table), "index": s.index, "entry": hx(s.table + 8 * s.index),
                   "desc": hx(s.desc), "kind": _step_kind(s)} for s in t.steps],
    }


def _context(c: ContextAnswer, devices: dict[str, dict[int, list[str]]], with_ranges: bool) -> dict[str, Any]:
    r, w = c.context, c.context.walk
    devs = devices.get(c.smmu, {})
    out: dict[str, Any] = {
        "smmu": c.smmu, "kind": r.kind, "sids": [hx(s) for s in r.sids],
        "devices": [n for s in r.sids for n in devs.get(s, [])],
        "ssid": r.ssid, "cd": hx(r.cd_addr), "asid": r.tag if r.stage == 1 else None, "vmid": r.tag if r.stage == 2 else None,
        "ttb": hx(r.ttb), "granule": w.granule if w else None, "ias": w.ias if w else None,
        "start_level": w.start_level if w else None,
        "n_leaves": w.n_leaves if w else 0, "mapped_bytes": w.mapped_bytes if w else 0,
        "complete": bool(w is not None and not w.truncated), "problems": list(w.problems) if w else [],
    }
    if with_ranges:
        out["ranges"] = [range_row(x) for x in c.ranges]
    if c.translation is not None:
        out["translation"] = _translation(c.translation)
    return out


def build(ans: DmaAnswer, dump: str, devices: dict[str, dict[int, list[str]]]) -> dict[str, Any]:
    """The answer as data (the JSON output): ``contexts`` with their merged ``ranges`` (every
    mapping the walks recorded) or the ``translation`` of the IOVA asked; ``reaching`` for a PA."""
    listing = ans.iova is None and ans.pa is None
    return {
        "dump": dump,
        "question": {"sid": hx(ans.sid), "ssid": ans.ssid, "iova": hx(ans.iova), "pa": hx(ans.pa)},
        "contexts": [_context(c, devices, listing) for c in ans.contexts],
        "stes": [{"smmu": s.smmu, "sid": hx(s.sid), "config": s.config, "valid": s.valid, "note": s.note} for s in ans.stes],
        "reaching": [{"smmu": name, "kind": h.context.kind, "sids": [hx(s) for s in h.context.sids],
                      "devices": [n for s in h.context.sids for n in devices.get(name, {}).get(s, [])],
                      "asid": h.context.tag if h.context.stage == 1 else None,
                      "vmid": h.context.tag if h.context.stage == 2 else None, "ssid": h.context.ssid,
                      "ttb": hx(h.context.ttb), "iova": hx(h.iova), "leaf_iova": hx(h.leaf.iova), "leaf_pa": hx(h.leaf.pa),
                      "size": h.leaf.size, "writable": h.writable} for name, h in ans.hits] if ans.pa is not None else [],
        "bypass": {name: [hx(s) for s in sids] for name, sids in ans.bypass.items()},
        "incomplete": list(ans.incomplete),
        "exit_code": ans.exit_code,
    }


def _who(c: dict[str, Any]) -> str:
    sids = ", ".join(c["sids"][:8]) + (f" (+{len(c['sids']) - 8})" if len(c["sids"]) > 8 else "")
    devs = f" [{', '.join(c['devices'][:4])}]" if c["devices"] else ""
    tag = f"ASID {c['asid']}" + (f" SSID {c['ssid']}" if c.get("ssid") else "") if c["kind"] == "s1" else f"VMID {c['vmid']}"
    return f"{c['smmu']} SID {sids}{devs} {c['kind']} {tag} table {c['ttb']}"


def text(m: dict[str, Any]) -> str:
    """Plain text, one fact per line."""
    out: list[str] = []
    q = m["question"]
    for c in m["contexts"]:
        if "ranges" not in c and "translation" not in c:
            continue  # asked about a PA: only the hits below matter
        gran = size_name(c["granule"]) if c["granule"] else "?"
        out.append(clean(f"{_who(c)} ({gran} granule, {c['ias']}-bit IOVA)"))
        if "ranges" in c:
            out.append(clean(f"  {c['n_leaves']} mappings in {len(c['ranges'])} ranges, {c['mapped_bytes']} bytes"
                             + ("" if c["complete"] else " (walk stopped by its budget: more exist)")))
            for r in c["ranges"]:
                out.append(clean(f"  {range_text(r)}"))
        t = c.get("translation")
        if t is not None:
            for s in t["steps"]:
                out.append(clean(f"  L{s['level']} {s['table']}[{s['index']}] @ {s['entry']} = {s['desc'] or 'not in dump'}"
                                 f" ({s['kind']})"))
            if t["pa"] is not None:
                out.append(clean(f"  IOVA {t['iova']} -> PA {t['pa']} ({size_name(t['size'])} {'page' if t['steps'][-1]['kind'] == 'page' else 'block'},"
                                 f" {'writable' if t['writable'] else 'read-only'})"))
            else:
                out.append(clean(f"  IOVA {t['iova']}: no translation: {t['fault']}"))
        for p in c["problems"]:
            out.append(clean(f"  problem: {p}"))
    for s in m["stes"]:
        out.append(clean(f"{s['smmu']} SID {s['sid']}: {s['config'] or 'no STE'}{'' if s['valid'] or s['config'] is None else ' (STE invalid)'}:"
                         f" {s['note']}"))
    if q["pa"] is not None:
        if m["reaching"]:
            out.append(clean(f"PA {q['pa']} is mapped by {len(m['reaching'])} IO page-table entr{'y' if len(m['reaching']) == 1 else 'ies'}:"))
            for h in m["reaching"]:
                out.append(clean(f"  {_who(h)}: IOVA {h['iova']} {'writable' if h['writable'] else 'read-only'}"
                                 f" ({size_name(h['size'])} leaf {h['leaf_iova']} -> {h['leaf_pa']})"))
        else:
            out.append(clean(f"PA {q['pa']}: no walked IO page table maps it"))
    for name, sids in m["bypass"].items():
        out.append(clean(f"{name}: SID {', '.join(sids[:16])}{' ...' if len(sids) > 16 else ''} bypass translation:"
                         " their DMA reaches every physical address"))
    if not m["contexts"] and not m["stes"] and q["pa"] is None:
        out.append("no translating context" + (f" for SID {q['sid']}" if q["sid"] else "") + " (no valid stage-1 CD or stage-2 STE)")
    for why in m["incomplete"]:
        out.append(clean(f"incomplete: {why}"))
    return "\n".join(out) + "\n"


def markdown(m: dict[str, Any]) -> str:
    """Markdown for a bug tracker: the text answer in a fenced block under a heading (pasteable
    as is; the text is already escaped line by line, and a fence cannot be closed from inside
    because every line is indented or starts with a name followed by text)."""
    q = m["question"]
    ask = ", ".join(f"{k.upper()} {v}" for k, v in q.items() if v is not None) or "every mapping"
    body = text(m).replace("```", "\\`\\`\\`")
    return f"### DMA: {md(ask)} in `{md(m['dump'])}`\n\n```\n{body}```\n"

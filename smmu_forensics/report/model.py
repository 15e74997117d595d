"""The report model: plain JSON-ready data that every renderer reads and none recomputes.

``inspect_smmu()`` runs the layers below (table walk, rules, findings) for one SMMU and returns
its part of the report; ``build()`` assembles the whole report.  The JSON output *is* this model
(see ``schema.json`` beside this file; ``schema_version`` changes when a documented key changes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smmu_forensics import __version__
from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.errors import EXIT_OK, EXIT_REJECTED, EXIT_UNKNOWN
from smmu_forensics.rules import findings as F
from smmu_forensics.rules.engine import Verdict, evaluate
from smmu_forensics.rules.versions import VERSIONS
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import schemas, vector
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import MAX_WALK_STES, StreamTable, walk

SCHEMA_VERSION = 1
CONFIG_NAMES = {0: "abort", 1: "reserved", 2: "reserved", 3: "reserved", 4: "bypass", 5: "s1", 6: "s2", 7: "nested"}


def hx(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def _fields(lay: L.Layout, value: Any, all_fields: bool, big_hex: bool = True) -> dict[str, Any]:
    """``{FIELD: {value, meaning}}`` from ``value(field) -> int``: the one way a decoded field is shown.

    Zero fields are left out unless ``all_fields``; reserved fields only when set.  Addresses (and,
    with ``big_hex``, values above 0xffff) are hex strings.
    """
    out: dict[str, Any] = {}
    for f in lay.fields:
        x = value(f)
        if (f.reserved or not all_fields) and not x:
            continue
        m = f.meaning(x)
        out[f.name] = {"value": hx(x) if f.addr or (big_hex and x > 0xFFFF) else x, **({"meaning": m} if m else {})}
    return out


def decode_registers(regs: Registers) -> dict[str, dict[str, Any]]:
    """Every named field of every register given (reserved bits only when set)."""
    out: dict[str, dict[str, Any]] = {}
    for name, lay in L.REGISTER_LAYOUTS.items():
        val = regs.get(name)
        if val is None:
            continue
        d = schemas.parse_word(lay, val)
        out[name] = {"raw": hx(val), "fields": _fields(lay, lambda f, d=d: d[f.name], True, big_hex=False)}
    return out


def decode_struct(lay: L.Layout, words: list[int], all_fields: bool = False) -> dict[str, Any]:
    """One structure through the Construct schema."""
    d = schemas.parse(lay, b"".join(int(w).to_bytes(8, "little") for w in words))
    return _fields(lay, lambda f: d[f.name], all_fields)


def _fields_from_columns(lay: L.Layout, cols: dict[str, np.ndarray], k: int, all_fields: bool) -> dict[str, Any]:
    """Row ``k`` of columns decoded by the vectorised path (held equal to Construct by the tests)."""
    return _fields(lay, lambda f: int(cols[f.name][k]), all_fields)


def ste_entries(t: StreamTable, rows: np.ndarray) -> list[dict[str, Any]]:
    """JSON entries of STEs, decoded through the vectorised path (equal to Construct's).

    ``fields`` (the decoded non-zero fields) is given for valid STEs whose Config is not abort;
    the others carry sid, raw, valid and config only.
    """
    if len(rows) == 0:
        return []
    words = t.words[rows]
    cols = vector.decode(L.STE, words)
    raw = words.astype("<u8").tobytes().hex()
    sids, addrs, known = t.sids[rows].tolist(), t.addrs[rows].tolist(), t.known[rows].tolist()
    v = cols["V"].tolist()
    cfgs = cols["CONFIG"].tolist()
    out = []
    for k in range(len(rows)):
        kn = known[k]
        e: dict[str, Any] = {
            "sid": sids[k],
            "sid_hex": hx(sids[k]),
            "addr": hx(addrs[k]),
            "in_dump": kn,
            "raw": raw[128 * k : 128 * k + 128] if kn else None,
            "valid": bool(v[k]) if kn else None,
            "config": CONFIG_NAMES[cfgs[k]] if kn else None,
            "config_raw": cfgs[k] if kn else None,
        }
        if kn and v[k] and cfgs[k]:
            e["fields"] = _fields_from_columns(L.STE, cols, k, False)
        out.append(e)
    return out


class SteListing:
    """The listed STEs of a table, generated in chunks when asked: ``--all`` on a table of a
    million STEs never holds a million dicts.  Behaves as a read-only list for renderers; the
    JSON writer streams it (see cli._emit_json)."""

    CHUNK = 8192

    def __init__(self, t: StreamTable, rows: np.ndarray) -> None:
        self.t, self.rows = t, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return ste_entries(self.t, self.rows[i])
        return ste_entries(self.t, self.rows[i : i + 1] if i >= 0 else self.rows[i:][:1])[0]

    def chunks(self) -> Any:
        for a in range(0, len(self.rows), self.CHUNK):
            yield ste_entries(self.t, self.rows[a : a + self.CHUNK])

    def __iter__(self) -> Any:
        for c in self.chunks():
            yield from c

    def __eq__(self, other: object) -> bool:
        return list(self) == other


def ste_entry(t: StreamTable, k: int, full: bool = False) -> dict[str, Any]:
    words = [int(x) for x in t.words[k]]
    raw = b"".join(w.to_bytes(8, "little") for w in words)
    cfg = L.get(L.STE, words, "CONFIG")
    e: dict[str, Any] = {
        "sid": int(t.sids[k]),
        "sid_hex": hx(int(t.sids[k])),
        "addr": hx(int(t.addrs[k])),
        "in_dump": bool(t.known[k]),
        "raw": raw.hex() if t.known[k] else None,
        "valid": bool(words[0] & 1) if t.known[k] else None,
        "config": CONFIG_NAMES[cfg] if t.known[k] else None,
        "config_raw": cfg if t.known[k] else None,
    }
    if t.known[k] and (words[0] & 1 or full):
        e["fields"] = decode_struct(L.STE, words, all_fields=full)
    return e


def table_model(t: StreamTable, list_all: bool) -> dict[str, Any]:
    g = t.geometry
    valid = t.valid()
    cfg = t.configs()
    by_cfg: dict[str, int] = {}
    for c, n in zip(*np.unique(cfg[valid], return_counts=True)):
        name = CONFIG_NAMES[int(c)]
        by_cfg[name] = by_cfg.get(name, 0) + int(n)
    if list_all:
        listed = np.arange(len(t.sids))
    else:
        listed = np.flatnonzero(valid & (cfg != L.STE_CFG_ABORT))
    return {
        "format": g.format,
        "fmt_raw": g.fmt,
        "base": hx(g.base),
        "base_register": hx(g.base_raw),
        "ra": g.ra,
        "cfg_register": hx(g.cfg_raw),
        "log2size": g.log2size,
        "split": g.split,
        "effective_log2size": g.eff_log2size,
        "n_l1": g.n_l1 if g.fmt == 1 else None,
        "l1_bytes": g.l1_bytes if g.fmt == 1 else None,
        "n_ste": g.n_ste if g.fmt != 1 else None,
        "l1": [
            {
                "index": e.index,
                "raw": hx(e.raw),
                "span": e.span if e.raw is not None else None,
                "l2ptr": hx(e.l2ptr) if e.raw is not None else None,
                "status": e.status,
                "n_stes": e.n_stes,
                "first_sid": hx(e.index << g.eff_split),
                "l2_in_dump": e.l2_state,
                "alias_of": e.alias_of,
            }
            for e in t.l1
        ],
        "ste_summary": {
            "walked": int(len(t.sids)),
            "in_dump": int(t.known.sum()),
            "valid": int(valid.sum()),
            "by_config": by_cfg,
            "listed": int(len(listed)),
            "listing": "all" if list_all else "valid, config not abort",
        },
        "stes": SteListing(t, listed),
        "truncated": list(t.truncated),
        "cd_tables": [
            {
                "addr": hx(ptr),
                "s1fmt": fmt,
                "s1cdmax": cdmax,
                "cds_nonzero": int(len(ct.ssids)),
                "in_dump": not ct.holes,
                "not_read": ct.not_read or None,
            }
            for (ptr, fmt, cdmax), ct in sorted(t.cd_tables.items())
        ],
    }


def verdict_model(rs_name: str, v: Verdict) -> dict[str, Any]:
    return {
        "ruleset": rs_name,
        "title": VERSIONS[rs_name].title,
        "decision": v.decision,
        "rule": v.rule,
        "errno": v.errno,
        "errno_name": v.errno_name,
        "message": v.message,
        "level": v.level,
        "detail": v.detail,
        "kernel_log": v.kernel_log,
        "l1": [{"index": r.index, "result": r.result, "rule": r.rule, "message": r.message} for r in v.l1],
        "trail": [{"rule": s.rule, "outcome": s.outcome, "detail": s.detail} for s in v.trail],
        "unknown": v.unknown,
        "notes": v.notes,
    }


def sid_detail(mem: PhysicalMemory, t: StreamTable, sid: int, regs: Registers) -> dict[str, Any]:
    k = t.find_sid(sid)
    if k is None:
        return {"sid": sid, "found": False, "why": "SID outside the walked table (no L1 entry, or beyond the table)"}
    e = ste_entry(t, k, full=True)
    e["found"] = True
    words = [int(x) for x in t.words[k]]
    cfg = L.get(L.STE, words, "CONFIG")
    if t.known[k] and words[0] & 1 and cfg in (L.STE_CFG_S1, L.STE_CFG_NESTED):
        key = (words[0] & L.LINUX_STE_S1CTXPTR_MASK, L.get(L.STE, words, "S1FMT"), L.get(L.STE, words, "S1CDMAX"))
        ct = t.cd_tables.get(key)
        cds = []
        if ct is not None:
            for j in range(min(len(ct.words), 64)):
                cw = [int(x) for x in ct.words[j]]
                cds.append({
                    "ssid": int(ct.ssids[j]),
                    "addr": hx(int(ct.addrs[j])),
                    "raw": b"".join(x.to_bytes(8, "little") for x in cw).hex(),
                    "fields": decode_struct(L.CD, cw, all_fields=True),
                })
        e["cd_table"] = {
            "addr": hx(key[0]),
            "not_read": ct.not_read if ct else "not read",
            "l1cd": [{"index": i, "raw": hx(r), "status": s} for i, r, s in (ct.l1 if ct else [])],
            "cds": cds,
            "holes": [{"start": hx(h.start), "end": hx(h.end), "state": h.state.value} for h in (ct.holes if ct else [])],
        }
    return e


def dma_model(reach: list[F.DmaReach]) -> list[dict[str, Any]]:
    out = []
    for r in reach:
        w = r.walk
        out.append({
            "kind": r.kind,
            "sids": [hx(s) for s in r.sids[:64]],
            "n_sids": len(r.sids),
            "cd": hx(r.cd_addr),
            "asid": r.asid if r.kind == "s1" else None,
            "vmid": r.asid if r.kind == "s2" else None,
            "ttb0": hx(r.ttb),
            "granule": w.granule if w else None,
            "start_level": w.start_level if w else None,
            "tables": [{"level": lv, "pa": hx(pa)} for lv, pa in (w.tables[:64] if w else [])],
            "n_tables": len(w.tables) if w else 0,
            "n_leaves": w.n_leaves if w else 0,
            "mapped_bytes": w.mapped_bytes if w else 0,
            "writable_leaves": sum(1 for x in w.leaves if x.writable) if w else 0,
            "leaves": [{"iova": hx(x.iova), "pa": hx(x.pa), "size": x.size, "writable": x.writable} for x in (w.leaves[:32] if w else [])],
            "problems": w.problems if w else [],
        })
    return out


def inspect_smmu(mem: PhysicalMemory | None, regs: Registers, rulesets: list[str], list_all: bool = False,
                 sid: int | None = None, max_stes: int | None = None) -> dict[str, Any]:
    """Walk, judge and describe one SMMU."""
    t = walk(mem, regs, max_stes=max_stes or MAX_WALK_STES) if mem is not None else None
    verdicts = {name: evaluate(VERSIONS[name], regs, t) for name in rulesets}
    finds, reach = F.find(mem, regs, t)
    m: dict[str, Any] = {
        "name": regs.name,
        "registers": regs.json(),
        "decoded_registers": decode_registers(regs),
        "features": {
            "sid_bits": regs.sid_bits,
            "ssid_bits": regs.ssid_bits,
            "asid_bits": regs.asid_bits,
            "vmid_bits": regs.vmid_bits,
            "feat_2lvl_strtab": regs.feat_2lvl,
            "coherent": regs.coherent,
            "coherent_basis": regs.coherent_basis,
        },
        "table": table_model(t, list_all) if t is not None else {"format": None, "why": "no STRTAB_BASE/STRTAB_BASE_CFG given" if mem is not None else "no dump"},
        "verdicts": {name: verdict_model(name, v) for name, v in verdicts.items()},
        "findings": [f.__dict__ for f in finds],
        "dma": dma_model(reach),
    }
    if sid is not None and t is not None and mem is not None:
        m["sid_detail"] = sid_detail(mem, t, sid, regs)
    return m


def exit_code(smmus: list[dict[str, Any]], fail_on: str | None = None) -> int:
    """0 adopted, 1 rejected/not adoptable (or a finding at ``fail_on`` or worse), 4 unknown."""
    decisions = [v["decision"] for s in smmus for v in s["verdicts"].values()]
    if any(d in ("reset", "no-adopt") for d in decisions):
        return EXIT_REJECTED
    if fail_on is not None:
        worst = F.SEVERITIES[: F.SEVERITIES.index(fail_on) + 1]
        if any(f["severity"] in worst for s in smmus for f in s["findings"]):
            return EXIT_REJECTED
    if any(d == "unknown" for d in decisions) or not decisions:
        return EXIT_UNKNOWN
    return EXIT_OK


def dump_model(mem: PhysicalMemory | None) -> dict[str, Any] | None:
    if mem is None:
        return None
    return {
        "path": mem.path,
        "format": mem.format_name,
        "page_size": mem.page_size,
        "osrelease": mem.vmcoreinfo().get("OSRELEASE"),
    }


def build(mem: PhysicalMemory | None, smmus: list[dict[str, Any]], rulesets: list[str], fail_on: str | None = None) -> dict[str, Any]:
    code = exit_code(smmus, fail_on)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": f"smmu-forensics {__version__}",
        "dump": dump_model(mem),
        "rulesets": rulesets,
        "smmus": smmus,
        "exit_code": code,
    }

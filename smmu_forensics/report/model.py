"""The report model: plain JSON-ready data that every renderer reads and none recomputes.

``build()`` turns an :class:`~smmu_forensics.analysis.Analysis` into the model; the JSON output
*is* this model (see ``schema.json`` beside this file and :mod:`.types`; ``schema_version``
changes when a documented key changes).  Nothing here reads memory or judges.

>>> from smmu_forensics.analysis import analyze, open_memory
>>> from smmu_forensics.smmu.registers import load_register_file
>>> with open_memory("fixtures/qemu-panic-carved.elf") as mem:
...     rep = build(analyze(mem, load_register_file("fixtures/qemu-panic-carved.elf.smmu.json"), ["latest"]))
>>> rep["exit_code"], [e["sid_hex"] for e in rep["smmus"][0]["table"]["stes"]]
(0, ['0x8', '0x10', '0x100'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from smmu_forensics import __version__
from smmu_forensics.analysis import Analysis, DumpSummary, SmmuResult
from smmu_forensics.discover.smmus import FoundSmmu
from smmu_forensics.report import types as T
from smmu_forensics.rules.base import L1Result, Verdict
from smmu_forensics.rules.versions import VERSIONS
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import schemas, vector
from smmu_forensics.smmu.dmamap import Range, merge, size_name
from smmu_forensics.smmu.fields import SteConfig
from smmu_forensics.smmu.reach import Reach
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable

__all__ = ["SCHEMA_VERSION", "SteListing", "build", "smmu_model", "decode_registers", "hx"]

SCHEMA_VERSION = 1
MAX_DMA_LEAVES = 32  # leaves listed per walk
MAX_DMA_TABLES = 64  # page-table pages listed per walk


def hx(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


def _shown(f: L.Field, x: int, big_hex: bool) -> T.FieldShown:
    m = f.meaning(x)
    v = hx(x) if f.addr or (big_hex and x > 0xFFFF) else x
    out: T.FieldShown = {"value": v if v is not None else x}
    if m:
        out["meaning"] = m
    return out


def _fields(lay: L.Layout, value: Callable[[L.Field], int], all_fields: bool, big_hex: bool = True) -> dict[str, T.FieldShown]:
    """``{FIELD: {value, meaning}}`` from ``value(field) -> int``: the one way a decoded field is shown.

    Zero fields are left out unless ``all_fields``; reserved fields only when set.  Addresses (and,
    with ``big_hex``, values above 0xffff) are hex strings.
    """
    out: dict[str, T.FieldShown] = {}
    for f in lay.fields:
        x = value(f)
        if (f.reserved or not all_fields) and not x:
            continue
        out[f.name] = _shown(f, x, big_hex)
    return out


def _fields_columns(lay: L.Layout, words: np.ndarray) -> list[dict[str, T.FieldShown]]:
    """The non-zero fields of every row, vectorised: work in proportion to the fields that are set.

    Equal to ``_fields(lay, ..., all_fields=False)`` row by row (a test holds them equal).
    """
    rows: list[dict[str, T.FieldShown]] = [{} for _ in range(len(words))]
    for f in lay.fields:
        col = vector.field(lay, words, f.name)
        nz = np.flatnonzero(col)
        if not len(nz):
            continue
        cache: dict[int, T.FieldShown] = {}
        for k, x in zip(nz.tolist(), col[nz].tolist()):
            e = cache.get(x)
            if e is None:
                e = cache[x] = _shown(f, x, True)
            rows[k][f.name] = e
    return rows


def _by_name(parsed: dict[str, int]) -> Callable[[L.Field], int]:
    return lambda f: parsed[f.name]


def decode_registers(regs: Registers) -> dict[str, T.DecodedRegister]:
    """Every named field of every register given (reserved bits only when set)."""
    out: dict[str, T.DecodedRegister] = {}
    for name, lay in L.REGISTER_LAYOUTS.items():
        val = regs.get(name)
        if val is None:
            continue
        out[name] = {"raw": hx(val), "fields": _fields(lay, _by_name(schemas.parse_word(lay, val)), True, big_hex=False)}
    return out


def decode_struct(lay: L.Layout, words: list[int], all_fields: bool = False) -> dict[str, T.FieldShown]:
    """One structure through the Construct schema."""
    return _fields(lay, _by_name(schemas.parse(lay, b"".join(int(w).to_bytes(8, "little") for w in words))), all_fields)


_CONFIG_LABELS = [SteConfig(c).label for c in range(8)]  # Config is 3 bits: one lookup a row, not an enum


def ste_entries(t: StreamTable, rows: np.ndarray, devices: dict[int, list[str]] | None = None) -> list[T.SteRow]:
    """JSON entries of STEs, decoded through the vectorised path (equal to Construct's).

    ``fields`` (the decoded non-zero fields) is given for valid STEs whose Config is not abort;
    the others carry sid, raw, valid and config only.
    """
    if len(rows) == 0:
        return []
    words = t.words[rows]
    raw = words.astype("<u8").tobytes().hex()
    sids, addrs, known = t.sids[rows].tolist(), t.addrs[rows].tolist(), t.known[rows].tolist()
    v_col, cfg_col = vector.field(L.STE, words, "V"), vector.field(L.STE, words, "CONFIG")
    v, cfgs = v_col.tolist(), cfg_col.tolist()
    with_fields = np.flatnonzero(t.known[rows] & (v_col != 0) & (cfg_col != 0))
    decoded = dict(zip(with_fields.tolist(), _fields_columns(L.STE, words[with_fields])))
    out: list[T.SteRow] = []
    label = _CONFIG_LABELS
    for k in range(len(rows)):
        kn = known[k]
        e: T.SteRow = {
            "sid": sids[k],
            "sid_hex": hx(sids[k]),
            "addr": hx(addrs[k]),
            "in_dump": kn,
            "raw": raw[128 * k : 128 * k + 128] if kn else None,
            "valid": bool(v[k]) if kn else None,
            "config": label[cfgs[k]] if kn else None,
            "config_raw": cfgs[k] if kn else None,
        }
        if k in decoded:
            e["fields"] = decoded[k]
        if devices and sids[k] in devices:
            e["devices"] = devices[sids[k]]
        out.append(e)
    return out


class Listing(Sequence[Any]):
    """A long list of report rows generated in chunks when asked (STEs, L1 descriptors, per-ruleset
    L1 results): ``--all`` on a table of a million STEs, or an L1 table of 2^17 descriptors, never
    holds them all as dicts.  Behaves as a read-only sequence for renderers; the JSON writer
    (:mod:`.jsonout`) streams it chunk by chunk."""

    CHUNK = 8192

    def __len__(self) -> int:
        raise NotImplementedError

    def rows(self, lo: int, hi: int) -> list[Any]:
        """Rows ``lo`` to ``hi`` (exclusive), made now."""
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        n = len(self)
        if isinstance(i, slice):
            lo, hi, step = i.indices(n)
            return self.rows(lo, max(lo, hi)) if step == 1 else [self[j] for j in range(lo, hi, step)]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self.rows(i, i + 1)[0]

    def chunks(self) -> Iterator[list[Any]]:
        for a in range(0, len(self), self.CHUNK):
            yield self.rows(a, min(a + self.CHUNK, len(self)))

    def __iter__(self) -> Iterator[Any]:
        for c in self.chunks():
            yield from c

    def __eq__(self, other: object) -> bool:
        return list(self) == other

    def __bool__(self) -> bool:
        return len(self) > 0


class SteListing(Listing):
    """The listed STEs of a table (rows of :func:`ste_entries`)."""

    def __init__(self, t: StreamTable, rows: np.ndarray, devices: dict[int, list[str]] | None = None) -> None:
        self.t, self.idx, self.devices = t, rows, devices

    def __len__(self) -> int:
        return len(self.idx)

    def rows(self, lo: int, hi: int) -> list[T.SteRow]:
        return ste_entries(self.t, self.idx[lo:hi], self.devices)


class L1Listing(Listing):
    """The table's non-zero and missing L1 descriptors (``table.l1`` rows)."""

    def __init__(self, t: StreamTable) -> None:
        self.entries, self.split = t.l1, t.geometry.eff_split

    def __len__(self) -> int:
        return len(self.entries)

    def rows(self, lo: int, hi: int) -> list[T.L1Row]:
        return [
            {
                "index": e.index,
                "raw": hx(e.raw),
                "span": e.span if e.raw is not None else None,
                "l2ptr": hx(e.l2ptr) if e.raw is not None else None,
                "status": e.status.value,
                "n_stes": e.n_stes,
                "first_sid": f"{e.index << self.split:#x}",
                "l2_in_dump": e.l2_state.value,
                "alias_of": e.alias_of,
            }
            for e in self.entries[lo:hi]
        ]


class L1ResultListing(Listing):
    """One ruleset's result for each visited L1 descriptor (``verdicts.*.l1`` rows)."""

    def __init__(self, results: Sequence[L1Result]) -> None:
        self.results = results

    def __len__(self) -> int:
        return len(self.results)

    def rows(self, lo: int, hi: int) -> list[T.L1VerdictRow]:
        return [{"index": r.index, "result": r.result.value, "rule": r.rule, "message": r.message}
                for r in self.results[lo:hi]]


def l1_results_upto(verdicts: dict[str, Any], last: int) -> dict[str, dict[int, T.L1VerdictRow]]:
    """Each ruleset's L1 results for descriptors up to index ``last``, by index: what a renderer
    that shows the first rows needs, read only that far (the listings are in index order)."""
    out: dict[str, dict[int, T.L1VerdictRow]] = {}
    for name, v in verdicts.items():
        got: dict[int, T.L1VerdictRow] = {}
        for r in v["l1"]:
            if r["index"] > last:
                break
            got[r["index"]] = r
        out[name] = got
    return out


def ste_entry(t: StreamTable, k: int, full: bool = False) -> T.SteRow:
    """One STE with every field (``full``) through the Construct schema (``--sid``)."""
    e = ste_entries(t, np.array([k]))[0]
    words = [int(x) for x in t.words[k]]
    if t.known[k] and (L.get(L.STE, words, "V") or full):
        e["fields"] = decode_struct(L.STE, words, all_fields=full)
    return e


def table_model(t: StreamTable, list_all: bool, devices: dict[int, list[str]] | None = None) -> T.TableModel:
    g = t.geometry
    valid = t.valid()
    cfg = t.configs()
    by_cfg: dict[str, int] = {}
    for c, n in zip(*np.unique(cfg[valid], return_counts=True)):
        name = SteConfig(int(c)).label
        by_cfg[name] = by_cfg.get(name, 0) + int(n)
    listed = np.arange(len(t.sids)) if list_all else np.flatnonzero(valid & (cfg != SteConfig.ABORT))
    two = g.fmt == L.StrtabFmt.TWO_LEVEL
    return {
        "format": g.format.value,
        "fmt_raw": g.fmt,
        "base": hx(g.base),
        "base_register": hx(g.base_raw),
        "ra": g.ra,
        "cfg_register": hx(g.cfg_raw),
        "log2size": g.log2size,
        "split": g.split,
        "effective_log2size": g.eff_log2size,
        "n_l1": g.n_l1 if two else None,
        "l1_bytes": g.l1_bytes if two else None,
        "n_ste": g.n_ste if not two else None,
        "l1": L1Listing(t),
        "ste_summary": {
            "walked": int(len(t.sids)),
            "in_dump": int(t.known.sum()),
            "valid": int(valid.sum()),
            "by_config": by_cfg,
            "listed": int(len(listed)),
            "listing": "all" if list_all else "valid, config not abort",
        },
        "stes": SteListing(t, listed, devices),
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


def verdict_model(rs_name: str, v: Verdict, assumptions: list[str] | None = None) -> T.VerdictModel:
    return {
        "ruleset": rs_name,
        "title": VERSIONS[rs_name].title,
        "decision": v.decision.value,
        "rule": v.rule,
        "rule_certain": v.rule_certain,
        "errno": v.errno,
        "errno_name": v.errno_name,
        "message": v.message,
        "level": v.level.value if v.level is not None else None,
        "detail": v.detail,
        "kernel_log": v.kernel_log,
        "l1": L1ResultListing(v.l1),
        "trail": [{"rule": s.rule, "outcome": s.outcome.value, "detail": s.detail} for s in v.trail],
        "unknown": v.unknown,
        "notes": v.notes,
        "assumptions": list(assumptions or []),
    }


def sid_detail(t: StreamTable, sid: int, devices: dict[int, list[str]] | None = None) -> T.SidDetail:
    k = t.find_sid(sid)
    if k is None:
        return {"sid": sid, "found": False, "why": "SID outside the walked table (no L1 entry, or beyond the table)"}
    row = ste_entry(t, k, full=True)
    e: T.SidDetail = {"sid": row["sid"], "found": True, "sid_hex": row["sid_hex"], "addr": row["addr"], "in_dump": row["in_dump"],
                      "raw": row["raw"], "valid": row["valid"], "config": row["config"], "config_raw": row["config_raw"]}
    if "fields" in row:
        e["fields"] = row["fields"]
    if devices and sid in devices:
        e["devices"] = devices[sid]
    words = [int(x) for x in t.words[k]]
    cfg = SteConfig(L.get(L.STE, words, "CONFIG"))
    if t.known[k] and L.get(L.STE, words, "V") and cfg.stage1:
        key = (L.linux_get(L.STE, words, "S1CONTEXTPTR"), L.get(L.STE, words, "S1FMT"), L.get(L.STE, words, "S1CDMAX"))
        ct = t.cd_tables.get(key)
        cds: list[T.CdRow] = []
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
            "l1cd": [{"index": c.index, "raw": hx(c.raw), "status": c.status.value} for c in (ct.l1 if ct else [])],
            "cds": cds,
            "holes": [{"start": hx(h.start), "end": hx(h.end), "state": h.state.value} for h in (ct.holes if ct else [])],
        }
    return e


def range_row(r: Range) -> T.RangeRow:
    """One merged range of mappings (ends inclusive)."""
    return {"iova": f"{r.iova:#x}", "iova_end": f"{r.iova + r.size - 1:#x}", "pa": f"{r.pa:#x}", "pa_end": f"{r.pa + r.size - 1:#x}",
            "size": r.size, "page_size": r.page_size, "pages": r.pages, "writable": r.writable}


def range_text(r: T.RangeRow) -> str:
    """One merged range as every renderer prints it.

    >>> range_text({"iova": "0x1000", "iova_end": "0x2fff", "pa": "0x8000", "pa_end": "0x9fff", "size": 8192,
    ...             "page_size": 4096, "pages": 2, "writable": True})
    '0x1000-0x2fff -> 0x8000-0x9fff rw 2x4K'
    """
    return (f"{r['iova']}-{r['iova_end']} -> {r['pa']}-{r['pa_end']} {'rw' if r['writable'] else 'ro'} "
            f"{r['pages']}x{size_name(r['page_size'])}")


def dma_model(reach: Reach, list_all: bool = False, devices: dict[int, list[str]] | None = None) -> list[T.DmaModel]:
    """The translating contexts; ``leaves`` holds the first MAX_DMA_LEAVES mappings, or with
    ``list_all`` every mapping the walk recorded (``n_leaves`` counts them all)."""
    out: list[T.DmaModel] = []
    n_leaves = None if list_all else MAX_DMA_LEAVES
    for r in reach.contexts:
        w = r.walk
        out.append({
            "kind": r.kind,
            "sids": [f"{s:#x}" for s in r.sids[:64]],
            "n_sids": len(r.sids),
            "cd": hx(r.cd_addr),
            "asid": r.tag if r.stage == 1 else None,
            "vmid": r.tag if r.stage == 2 else None,
            "ttb0": hx(r.ttb),
            "granule": w.granule if w else None,
            "start_level": w.start_level if w else None,
            "tables": [{"level": lv, "pa": hx(pa)} for lv, pa in (w.tables[:MAX_DMA_TABLES] if w else [])],
            "n_tables": len(w.tables) if w else 0,
            "n_leaves": w.n_leaves if w else 0,
            "mapped_bytes": w.mapped_bytes if w else 0,
            "writable_leaves": sum(1 for x in w.leaves if x.writable) if w else 0,
            "leaves": [{"iova": hx(x.iova), "pa": hx(x.pa), "size": x.size, "writable": x.writable}
                       for x in (w.leaves[:n_leaves] if w else [])],
            "ranges": [range_row(x) for x in merge(w.leaves)] if w else [],
            "complete": bool(w is not None and not w.truncated),
            "problems": w.problems if w else [],
            "devices": [n for s in r.sids[:64] for n in (devices or {}).get(s, [])],
        })
    return out


def smmu_model(s: SmmuResult, list_all: bool = False, sid: int | None = None, with_memory: bool = True) -> T.SmmuModel:
    """One SMMU's part of the report."""
    regs, t = s.regs, s.snapshot.table
    m: T.SmmuModel = {
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
        "table": table_model(t, list_all, s.devices) if t is not None else {
            "format": None, "why": "no STRTAB_BASE/STRTAB_BASE_CFG given" if with_memory else "no dump"},
        "verdicts": {name: verdict_model(name, v, s.discovery.assumptions if s.discovery else None) for name, v in s.verdicts.items()},
        "findings": [{"id": f.id, "severity": f.severity.value, "where": f.where, "message": f.message} for f in s.findings],
        "dma": dma_model(s.snapshot.reach, list_all, s.devices),
    }
    if sid is not None and t is not None:
        m["sid_detail"] = sid_detail(t, sid, s.devices)
    if s.discovery is not None:
        m["discovery"] = discovery_model(s.discovery)
    return m


def discovery_model(f: FoundSmmu) -> T.DiscoveryModel:
    return {
        "sources": sorted({e.source for e in f.evidence}),
        "evidence": [{"what": e.what, "source": e.source, "addr": hx(e.addr)} for e in f.evidence],
        "assumptions": list(f.assumptions),
        "notes": [],
    }


def dump_model(d: DumpSummary | None) -> T.DumpModel | None:
    if d is None:
        return None
    return {"path": d.path, "format": d.format, "page_size": d.page_size, "osrelease": d.osrelease}


def build(a: Analysis, list_all: bool = False, sid: int | None = None) -> T.Report:
    """The whole report for an analysis."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": f"smmu-forensics {__version__}",
        "dump": dump_model(a.dump),
        "rulesets": a.rulesets,
        "smmus": [smmu_model(s, list_all, sid, a.dump is not None) for s in a.smmus],
        "exit_code": a.exit_code,
    }

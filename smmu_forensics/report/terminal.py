"""Terminal renderer (Rich).  Plain text when stdout is not a terminal or NO_COLOR is set.

Reads the report model only; every string that came from a dump or a register file goes
through :func:`escape.markup` or into a ``Text`` object, never into markup unescaped.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from smmu_forensics.report import answer
from smmu_forensics.report.escape import clean
from smmu_forensics.report.model import l1_results_upto, range_text
from smmu_forensics.report.types import DiscoveryModel, Report, SidDetail, SmmuModel, TableModel

DECISION_STYLE = {
    "adopt": ("ADOPT", "bold green"),
    "reset": ("FULL RESET", "bold red"),
    "no-adopt": ("NO ADOPTION ATTEMPTED", "bold yellow"),
    "unknown": ("UNKNOWN", "bold magenta"),
}
SEV_STYLE = {"critical": "bold red", "error": "red", "warning": "yellow", "info": "cyan"}
L1_STYLE = {"accept": "green", "reject": "bold red", "fresh": "dim", "unknown": "magenta"}


def T(s: object, style: str = "") -> Text:
    return Text(clean(s), style=style)


def _plain(x: object) -> str:
    return x.plain if isinstance(x, Text) else str(x)


def _min_width(table: Table) -> int:
    """The narrowest this table renders without cutting a word: each column as wide as its longest
    word (header included), plus padding and borders (Rich's default box: 3 per column, 1 more)."""
    cols = [max((len(w) for x in (col.header, *col.cells) for line in _plain(x).splitlines() for w in line.split()), default=1)
            for col in table.columns]
    return sum(cols) + 3 * len(cols) + 1


def _show(table: Table, c: Console) -> None:
    """A table when it fits the console without cutting a word; otherwise the same cells as a list
    (first column as the heading, ``column: value`` lines under it), so at 80 columns no address,
    raw value, rule ID or state is ever cut."""
    if _min_width(table) <= c.width:
        c.print(table)
        return
    if table.title:
        c.print(table.title if isinstance(table.title, Text) else Text(str(table.title)), style="italic")
    heads = [str(col.header) for col in table.columns]
    for row in zip(*(list(col.cells) for col in table.columns)):
        first = row[0] if isinstance(row[0], Text) else Text(str(row[0]))
        c.print(Text(f"- {heads[0]}: ").append_text(first))
        for head, cell in zip(heads[1:], row[1:]):
            t = cell if isinstance(cell, Text) else Text(str(cell))
            if t.plain.strip() and t.plain.strip() != "-":
                c.print(Text(f"    {head}: ", style="dim").append_text(t))


def render(report: Report, console: Console) -> None:
    d = report.get("dump")
    if d:
        console.print(T(f"dump: {d['path']}  ({d['format']}, page {d['page_size']}"
                        + (f", {d['osrelease']}" if d.get("osrelease") else "") + ")", "dim"))
    _answer(report, console)
    for s in report["smmus"]:
        _smmu(s, console)
    console.print(T(f"exit code {report['exit_code']}", "dim"))


def _answer(report: Report, c: Console) -> None:
    """The answer first: one line per SMMU and ruleset, then each SMMU's worst finding."""
    c.rule(T("answer", "bold"))
    for a in answer.lines(report):
        label, style = DECISION_STYLE[a.decision]
        line = Text(clean(a.smmu) + " ", style="bold")
        line.append(clean(a.ruleset) + " ")
        line.append(label, style=style)
        if a.rule and a.decision != "adopt":
            line.append(" " + clean(a.rule) + ("?" if not a.certain else ""), style=style)
        if a.why:
            line.append(": " + clean(a.why))
        c.print(line)
    for s in report["smmus"]:
        w = answer.worst(s)
        if w is not None and w["severity"] in ("critical", "error", "warning"):
            n = sum(f["severity"] == w["severity"] for f in s["findings"])
            line = Text(clean(s["name"]) + " worst finding: ", style="bold")
            line.append(f"{w['severity']} {clean(w['id'])}", style=SEV_STYLE.get(w["severity"], ""))
            line.append(f" at {clean(w['where'])}: {clean(w['message'])}" + (f" (+{n - 1} more {w['severity']})" if n > 1 else ""))
            c.print(line)
    c.print(T(f"exit code {report['exit_code']}; details follow", "dim"))


def _registers(s: SmmuModel, c: Console) -> None:
    rt = Table(title="Registers (as given)", title_justify="left")
    rt.add_column("register")
    rt.add_column("value")
    rt.add_column("fields (non-zero)")
    for name, d in s.get("decoded_registers", {}).items():
        parts = []
        for k, f in d["fields"].items():
            if f["value"] in (0, "0x0"):
                continue
            parts.append(f"{k}={f['value']}" + (f" ({f['meaning']})" if "meaning" in f else ""))
        rt.add_row(T(name.upper()), T(d["raw"]), T(", ".join(parts) or "-"))
    _show(rt, c)


def _smmu(s: SmmuModel, c: Console) -> None:
    c.rule(T(f"SMMU {s['name']}", "bold"))
    origin = s["registers"].get("origin")
    feats = s["features"]
    c.print(T(f"registers from {origin or 'command line'}; coherent={feats['coherent']} ({feats['coherent_basis']})", "dim"))
    if "discovery" in s:
        _discovery(s["discovery"], c)
    _registers(s, c)
    _verdicts(s, c)
    t = s["table"]
    if not t.get("format"):
        c.print(T(f"table: not walked ({t.get('why')})", "yellow"))
    else:
        _table(s, t, c)
    if "sid_detail" in s:
        _sid(s["sid_detail"], c)
    _dma(s, c)
    _findings(s, c)


def _discovery(d: DiscoveryModel, c: Console) -> None:
    c.print(T(f"no register file: found in the dump ({', '.join(d['sources'])})", "bold"))
    for e in d["evidence"]:
        c.print(T(f"  {e['what']}" + (f"  [@ {e['addr']}]" if e["addr"] else ""), "dim"))
    for a in d["assumptions"]:
        c.print(T(f"  assumed: {a}", "yellow"))


def _verdicts(s: SmmuModel, c: Console) -> None:
    vt = Table(title="Would a kdump kernel adopt this stream table?", title_justify="left", expand=False)
    for col in ("ruleset", "decision", "rule", "errno", "kernel message / why"):
        vt.add_column(col)
    shared = answer.common_notes(s["verdicts"])
    for name, v in s["verdicts"].items():
        label, style = DECISION_STYLE[v["decision"]]
        why = v["message"] or v["detail"] or ""
        if v["decision"] == "unknown":
            why = "needs: " + "; ".join(v["unknown"])
        elif v["decision"] == "adopt":
            why = v["kernel_log"][0].split(": ", 1)[-1] if v["kernel_log"] else ""
        parts = [why]  # one line each, escaped each: only these breaks are the report's own
        if v["decision"] == "reset" and v["detail"] and v["message"]:
            parts.append(v["detail"])
        if not v.get("rule_certain", True):
            parts.append("rule uncertain (the decision is not): " + "; ".join(v["unknown"]))
        parts += [f"note: {n}" for n in v["notes"] if n not in shared]
        vt.add_row(T(name), T(label, style), T(v["rule"] or "-"), T(v["errno_name"] and f"-{v['errno_name']}" or "-"),
                   Text("\n").join(T(p) for p in parts))
    _show(vt, c)
    for n in shared:
        c.print(T(f"note (every ruleset): {n}", "dim"))
    logs: dict[tuple[str, ...], list[str]] = {}
    for name, v in s["verdicts"].items():
        if v["kernel_log"]:
            logs.setdefault(tuple(v["kernel_log"]), []).append(name)
    for lines, names in logs.items():
        c.print(T(f"what the kdump kernel prints ({', '.join(names)}):", "dim"))
        for line in lines:
            c.print(T(f"  {line}", "dim"))


def _table(s: SmmuModel, t: TableModel, c: Console) -> None:
    geo = f"table: {t['format']}  base {t['base']}{'  RA' if t['ra'] else ''}  LOG2SIZE {t['log2size']}  SPLIT {t['split']}"
    if t["format"] == "2lvl":
        geo += f"  {t['n_l1']} L1 descriptors ({t['l1_bytes']} bytes)"
    else:
        geo += f"  {t['n_ste']} STEs"
    c.print(T(geo, "bold"))
    for why in t["truncated"]:
        c.print(T(f"partial: {why}", "yellow"))
    if t["l1"]:
        _l1(s, t, c)
    sm = t["ste_summary"]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(sm["by_config"].items()))
    c.print(T(f"STEs: {sm['walked']} walked, {sm['in_dump']} in the dump, {sm['valid']} valid ({counts or 'none'}); "
              f"listing {sm['listed']} ({sm['listing']})"))
    if t["stes"]:
        st = Table(title="STEs", title_justify="left")
        shown = t["stes"][:512]
        named = any("devices" in e for e in shown)
        for col in ("SID", *(("device",) if named else ()), "address", "V", "config", "key fields"):
            st.add_column(col)
        for e in shown:
            f = e.get("fields", {})
            keys = " ".join(f"{k}={v['value']}" for k, v in f.items() if k not in ("V", "CONFIG"))
            dev = (T(", ".join(e.get("devices", [])) or "-"),) if named else ()
            st.add_row(T(e["sid_hex"]), *dev, T(e["addr"]), T("?" if e["valid"] is None else int(e["valid"])),
                       T(e["config"] or "not in dump", "red" if e["config"] in ("bypass", "reserved") else ""), T(keys))
        if len(t["stes"]) > 512:
            st.add_row(T(f"... {len(t['stes']) - 512} more (use --format json)"), *[T("")] * (len(st.columns) - 1))
        _show(st, c)


def _l1(s: SmmuModel, t: TableModel, c: Console) -> None:
    lt = Table(title="L1 descriptors (non-zero)", title_justify="left")
    for col in ("index", "raw", "span", "L2Ptr", "SIDs", "status", "L2 in dump", *s["verdicts"].keys()):
        lt.add_column(col)
    shown = t["l1"][:256]
    res = l1_results_upto(s["verdicts"], shown[-1]["index"] if shown else -1)
    for e in shown:
        first = int(e["first_sid"], 16)
        cells = [T(e["index"]), T(e["raw"] or "?"), T(e["span"] if e["span"] is not None else "?"), T(e["l2ptr"] or "?"),
                 T(f"{first:#x}-{first + max(e['n_stes'], 1) - 1:#x}" if e["n_stes"] else "-"),
                 T(e["status"] + (f" (alias of L1[{e['alias_of']}])" if e["alias_of"] is not None else "")), T(e["l2_in_dump"])]
        for name in s["verdicts"]:
            r = res[name].get(e["index"])
            cells.append(T(r["result"] + (f" {r['rule']}" if r["rule"] else ""), L1_STYLE.get(r["result"], "")) if r else T("-"))
        lt.add_row(*cells)
    if len(t["l1"]) > 256:
        lt.add_row(T(f"... {len(t['l1']) - 256} more"), *[T("")] * (len(lt.columns) - 1))
    _show(lt, c)


def _dma(s: SmmuModel, c: Console) -> None:
    if not s["dma"]:
        return
    dt = Table(title="What in-flight DMA can reach (translating contexts and their page tables)", title_justify="left")
    for col in ("stage", "SIDs", "CD", "ASID/VMID", "table root", "tables", "mappings", "bytes", "writable", "problems"):
        dt.add_column(col)
    for r in s["dma"][:64]:
        tag = f"ASID {r['asid']}" if r["kind"] == "s1" else f"VMID {r['vmid']}"
        dt.add_row(T(r["kind"]), T(", ".join(r["sids"][:6]) + ("..." if r["n_sids"] > 6 else "")), T(r["cd"] or "-"), T(tag), T(r["ttb0"]),
                   T(r["n_tables"]), T(r["n_leaves"]), T(r["mapped_bytes"]), T(r["writable_leaves"]), T(len(r["problems"])))
    _show(dt, c)
    if s["table"].get("ste_summary", {}).get("listing") != "all":
        c.print(T(f"{sum(len(r['ranges']) for r in s['dma'])} mapped ranges: --all lists them; "
                  "`smmu-forensics dma DUMP --iova/--pa` answers one address", "dim"))
        return
    for r in s["dma"]:
        tag = f"ASID {r['asid']}" if r["kind"] == "s1" else f"VMID {r['vmid']}"
        c.print(T(f"mappings of {tag} (table {r['ttb0']}, SIDs {', '.join(r['sids'])}): {r['n_leaves']} in {len(r['ranges'])} ranges"
                  + ("" if r["complete"] else " (walk stopped by its budget: more exist)"), "bold"))
        for x in r["ranges"]:
            c.print(T(f"  {range_text(x)}"))


def _findings(s: SmmuModel, c: Console) -> None:
    if not s["findings"]:
        c.print(T("findings: none", "green"))
        return
    ft = Table(title="Findings (beyond the kernel's checks)", title_justify="left")
    for col in ("severity", "id", "where", "message"):
        ft.add_column(col)
    for f in s["findings"]:
        ft.add_row(T(f["severity"], SEV_STYLE.get(f["severity"], "")), T(f["id"]), T(f["where"]), T(f["message"]))
    _show(ft, c)


def _sid(d: SidDetail, c: Console) -> None:
    c.rule(T(f"SID {d.get('sid_hex', d['sid'])}"))
    if not d.get("found"):
        c.print(T(d.get("why", "not found"), "yellow"))
        return
    c.print(T(f"STE at {d['addr']}: {d['raw']}"))
    ft = Table(title="STE fields", title_justify="left")
    for col in ("field", "value", "meaning"):
        ft.add_column(col)
    fields, hidden = answer.relevant_fields(d.get("config"), d.get("fields", {}))
    for k, v in fields.items():
        ft.add_row(T(k), T(v["value"]), T(v.get("meaning", "")))
    _show(ft, c)
    if hidden:
        c.print(T(f"({hidden} zero fields of a stage Config {d.get('config')} does not use left out; --format json has every field)", "dim"))
    cdt = d.get("cd_table")
    if cdt:
        c.print(T(f"CD table at {cdt['addr']}" + (f" ({cdt['not_read']})" if cdt["not_read"] else "")))
        for cd in cdt["cds"][:8]:
            t = Table(title=f"CD SSID {cd['ssid']} at {cd['addr']}", title_justify="left")
            for col in ("field", "value", "meaning"):
                t.add_column(col)
            for k, v in cd["fields"].items():
                t.add_row(T(k), T(v["value"]), T(v.get("meaning", "")))
            _show(t, c)


def render_info(inf: dict[str, Any], c: Console, all_ranges: bool = False) -> None:
    from smmu_forensics.report.memview import detail_text

    c.print(T(f"{inf['path']}", "bold"))
    c.print(T(f"format {inf['format']}, codec {inf['codec'] or 'none'}, page size {inf['page_size']}"))
    if inf["incomplete"]:
        for r in inf["incomplete_reasons"]:
            c.print(T(f"INCOMPLETE: {r}", "bold red"))
    sm = inf["summary"]
    span = f" from {sm['span'][0]} to {sm['span'][1]}" if sm["span"] else ""
    c.print(T(f"{sm['n_ranges']} physical ranges{span}:"))
    for state, e in sorted(sm["by_state"].items(), key=lambda kv: -kv[1]["bytes"]):
        c.print(T(f"  {state:<9} {_size(e['bytes']):>11} in {e['ranges']} range{'s' if e['ranges'] != 1 else ''}"))
    pages = ", ".join(f"{k} {v if v is not None else 'not counted'}" for k, v in inf["pages"].items())
    c.print(T(f"pages: {pages}"))
    rows = inf["ranges"] if all_ranges else sm["largest"]
    rt = Table(title="physical ranges" if all_ranges else f"largest ranges ({len(rows)} of {sm['n_ranges']}; --ranges lists all)",
               title_justify="left")
    for col in ("start", "end", "size", "state"):
        rt.add_column(col)
    for r in rows:
        rt.add_row(T(r["start"]), T(r["end"]), T(_size(int(r["size"]))), T(r["state"]))
    _show(rt, c)
    if inf["vmcoreinfo"]:
        more = inf["vmcoreinfo_keys"] - len(inf["vmcoreinfo"])
        vt = Table(title="VMCOREINFO" + (f" ({more} more keys: --vmcoreinfo)" if more > 0 else ""), title_justify="left")
        vt.add_column("key")
        vt.add_column("value")
        for k, v in inf["vmcoreinfo"].items():
            vt.add_row(T(k), T(v))
        _show(vt, c)
    for k, v in inf["details"].items():
        if k != "vmcoreinfo_keys":
            c.print(T(f"{k}: {detail_text(v)}", "dim"))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)

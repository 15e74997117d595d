"""Markdown renderer, for bug trackers.  Every value goes through :func:`escape.md`."""

from __future__ import annotations

from smmu_forensics.report import answer
from smmu_forensics.report.escape import md
from smmu_forensics.report.model import l1_results_upto, range_text
from smmu_forensics.report.types import FieldShown, Report, SidDetail, SmmuModel

LABEL = {"adopt": "**ADOPT**", "reset": "**FULL RESET**", "no-adopt": "**NO ADOPTION ATTEMPTED**", "unknown": "**UNKNOWN**"}


def _row(*cells: object) -> str:
    return "| " + " | ".join(md(c) if not (isinstance(c, str) and c.startswith("**")) else c for c in cells) + " |"


def render(report: Report) -> str:
    out: list[str] = ["# smmu-forensics report", ""]
    d = report.get("dump")
    if d:
        out.append(f"Dump {md(d['path'])}: {md(d['format'])}, page size {d['page_size']}"
                   + (f", kernel {md(d['osrelease'])}" if d.get("osrelease") else "") + ".")
        out.append("")
    out += _answer(report)
    for s in report["smmus"]:
        out += _smmu(s)
    out.append(f"_{md(report['tool'])}, schema {report['schema_version']}, exit code {report['exit_code']}_")
    return "\n".join(out) + "\n"


def _answer(report: Report) -> list[str]:
    """The answer first: one row per SMMU and ruleset, and each SMMU's worst finding."""
    o = ["| SMMU | ruleset | decision | rule | kernel message / why |", "|---|---|---|---|---|"]
    for a in answer.lines(report):
        o.append(_row(a.smmu, a.ruleset, LABEL[a.decision], (a.rule or "-") + ("?" if not a.certain else ""), a.why))
    for s in report["smmus"]:
        w = answer.worst(s)
        if w is not None and w["severity"] in ("critical", "error", "warning"):
            o += ["", f"Worst finding on {md(s['name'])}: **{md(w['severity'])}** `{md(w['id'])}` at {md(w['where'])}: {md(w['message'])}"]
    return o + [""]


def _fields_table(fields: dict[str, FieldShown]) -> list[str]:
    o = ["| field | value | meaning |", "|---|---|---|"]
    for k, v in fields.items():
        o.append(_row(k, v["value"], v.get("meaning", "")))
    return o


def _sid(d: SidDetail) -> list[str]:
    """``--sid``: the STE with every field, and the CDs behind it."""
    o = ["", f"### SID {md(d.get('sid_hex') or hex(d['sid']))}", ""]
    if not d.get("found"):
        return o + [md(d.get("why", "not found"))]
    fields, hidden = answer.relevant_fields(d.get("config"), d.get("fields", {}))
    o += [f"STE at {md(d['addr'])}: `{md(d['raw'] or 'not in the dump')}`", ""] + _fields_table(fields)
    if hidden:
        o += ["", f"({hidden} zero fields of a stage Config {md(d.get('config'))} does not use left out; --format json has every field.)"]
    cdt = d.get("cd_table")
    if cdt:
        o += ["", f"CD table at {md(cdt['addr'])}" + (f" ({md(cdt['not_read'])})" if cdt["not_read"] else "") + "."]
        for cd in cdt["cds"][:8]:
            o += ["", f"<details><summary>CD SSID {cd['ssid']} at {md(cd['addr'])}</summary>", ""]
            o += _fields_table(cd["fields"]) + ["", "</details>"]
    return o


def _smmu(s: SmmuModel) -> list[str]:
    o = [f"## SMMU {md(s['name'])}", ""]
    f = s["features"]
    o.append(f"Coherent: {md(f['coherent'])} ({md(f['coherent_basis'])}). SIDSIZE {md(f['sid_bits'])}, "
             f"SSIDSIZE {md(f['ssid_bits'])}, 2-level capable: {md(f['feat_2lvl_strtab'])}.")
    if "discovery" in s:
        disc = s["discovery"]
        o += ["", f"**No register file: registers found in the dump** ({md(', '.join(disc['sources']))}).", ""]
        o += [f"- {md(e['what'])}" + (f" (at {md(e['addr'])})" if e["addr"] else "") for e in disc["evidence"]]
        o += [f"- assumed: {md(a)}" for a in disc["assumptions"]]
    o += ["", "<details><summary>Registers</summary>", "", "| register | value | fields (non-zero) |", "|---|---|---|"]
    for name, d in s.get("decoded_registers", {}).items():
        parts = [f"{k}={f['value']}" + (f" ({f['meaning']})" if "meaning" in f else "")
                 for k, f in d["fields"].items() if f["value"] not in (0, "0x0")]
        o.append(_row(name.upper(), d["raw"], ", ".join(parts) or "-"))
    o += ["", "</details>"]
    o += _verdicts(s)
    return o + _table(s)


def _verdicts(s: SmmuModel) -> list[str]:
    o = ["", "### Verdicts", "", "| ruleset | decision | rule | errno | kernel message |", "|---|---|---|---|---|"]
    shared = answer.common_notes(s["verdicts"])
    for name, v in s["verdicts"].items():
        msg = v["message"] or v["detail"] or ("needs: " + "; ".join(v["unknown"]) if v["unknown"] else "")
        if v["decision"] == "adopt" and v["kernel_log"]:
            msg = v["kernel_log"][0]
        o.append(_row(name, LABEL[v["decision"]], v["rule"] or "-", f"-{v['errno_name']}" if v["errno_name"] else "-", msg))
    for name, v in s["verdicts"].items():
        if v["decision"] == "reset" and v["detail"]:
            o.append(f"\n{md(name)}: {md(v['detail'])}")
        if not v.get("rule_certain", True):
            o.append(f"\n{md(name)}: the decision is certain, the rule is not: {md('; '.join(v['unknown']))}")
        if v["kernel_log"] and v["decision"] != "adopt":
            o += ["", f"{md(name)}, what the kdump kernel prints:", "", "```"] + [line.replace("`", "'") for line in v["kernel_log"]] + ["```"]
        for n in v["notes"]:
            if n not in shared:
                o.append(f"\n{md(name)} note: {md(n)}")
    o += [f"\nNote (every ruleset): {md(n)}" for n in shared]
    return o


def _table(s: SmmuModel) -> list[str]:
    o: list[str] = []
    t = s["table"]
    o += ["", "### Stream table", ""]
    if not t.get("format"):
        o.append(f"Not walked: {md(t.get('why'))}.")
        return o + [""]
    o.append(f"{md(t['format'])}, base {md(t['base'])}{' (RA)' if t['ra'] else ''}, LOG2SIZE {t['log2size']}, SPLIT {t['split']}"
             + (f", {t['n_l1']} L1 descriptors." if t["format"] == "2lvl" else f", {t['n_ste']} STEs."))
    for why in t["truncated"]:
        o.append(f"\n**Partial:** {md(why)}")
    if t["l1"]:
        names = list(s["verdicts"])
        o += ["", "| L1 | raw | span | L2Ptr | status | L2 in dump | " + " | ".join(md(n) for n in names) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(names)]
        shown_l1 = t["l1"][:256]
        res = l1_results_upto(s["verdicts"], shown_l1[-1]["index"] if shown_l1 else -1)
        for e in shown_l1:
            cells = [e["index"], e["raw"] or "?", e["span"], e["l2ptr"] or "?", e["status"], e["l2_in_dump"]]
            for n in names:
                r = res[n].get(e["index"])
                cells.append((r["result"] + (f" {r['rule']}" if r["rule"] else "")) if r else "-")
            o.append(_row(*cells))
    sm = t["ste_summary"]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(sm["by_config"].items()))
    o += ["", f"STEs: {sm['walked']} walked, {sm['valid']} valid ({md(counts or 'none')}); listed: {sm['listed']} ({md(sm['listing'])})."]
    if t["stes"]:
        shown = t["stes"][:256]
        named = any("devices" in ste for ste in shown)  # a device column when the dump names them
        o += ["", "| SID |" + (" device |" if named else "") + " address | config | raw (first 16 bytes) |",
              "|---|" + ("---|" if named else "") + "---|---|---|"]
        for ste in shown:
            dev = (", ".join(ste.get("devices", [])) or "-",) if named else ()
            o.append(_row(ste["sid_hex"], *dev, ste["addr"], ste["config"] or "not in dump", (ste["raw"] or "")[:32]))
        if len(t["stes"]) > 256:
            o.append(f"\n... {len(t['stes']) - 256} more STEs (see --format json)")
    if "sid_detail" in s:
        o += _sid(s["sid_detail"])
    if s["dma"]:
        o += ["", "### What in-flight DMA can reach", "", "| stage | SIDs | CD | ASID/VMID | table root | mappings | writable | problems |",
              "|---|---|---|---|---|---|---|---|"]
        for d in s["dma"][:64]:
            tag = f"ASID {d['asid']}" if d["kind"] == "s1" else f"VMID {d['vmid']}"
            o.append(_row(d["kind"], ", ".join(d["sids"][:6]), d["cd"] or "-", tag, d["ttb0"], d["n_leaves"], d["writable_leaves"], len(d["problems"])))
        if sm["listing"] == "all":  # every mapping, folded: a paste stays readable
            for d in s["dma"]:
                tag = f"ASID {d['asid']}" if d["kind"] == "s1" else f"VMID {d['vmid']}"
                more = "" if d["complete"] else ", walk stopped by its budget: more exist"
                o += ["", f"<details><summary>mappings of {md(tag)}, table {md(d['ttb0'])}: {d['n_leaves']} in {len(d['ranges'])} ranges{md(more)}"
                      "</summary>", "", "```"]
                o += [range_text(x) for x in d["ranges"]]
                o += ["```", "", "</details>"]
    o += ["", "### Findings", ""]
    if not s["findings"]:
        o.append("None.")
    else:
        o += ["| severity | id | where | message |", "|---|---|---|---|"]
        for fd in s["findings"]:
            o.append(_row(fd["severity"], fd["id"], fd["where"], fd["message"]))
    return o + [""]

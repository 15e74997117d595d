"""The answer, first: one line per SMMU and ruleset (decision, rule, the kernel's message) and the
worst finding, built once from the report model for every renderer.

>>> v = {"decision": "reset", "rule": "L1-SPAN", "message": "arm-smmu-v3: bad L1 span", "detail": "",
...      "unknown": [], "kernel_log": [], "rule_certain": True}
>>> s = {"name": "smmu0", "verdicts": {"latest": v}, "findings": [{"severity": "error", "id": "L1-X", "where": "L1[1]",
...      "message": "m"}]}
>>> [(a.smmu, a.ruleset, a.decision, a.rule, a.why) for a in lines({"smmus": [s]})], worst(s)["id"]
([('smmu0', 'latest', 'reset', 'L1-SPAN', 'arm-smmu-v3: bad L1 span')], 'L1-X')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "lines", "worst", "SEVERITY_ORDER", "common_notes", "relevant_fields"]

SEVERITY_ORDER = ("critical", "error", "warning", "info")


@dataclass(frozen=True)
class Answer:
    smmu: str
    ruleset: str
    decision: str
    rule: str | None
    why: str  # the kernel's message (reset), its adoption line (adopt), or what is missing (unknown)
    certain: bool = True  # False: the decision stands, the rule may be an earlier unseen one


def _why(v: Any) -> str:
    if v["decision"] == "unknown":
        return "needs: " + "; ".join(v["unknown"])
    if v["decision"] == "adopt":
        return v["kernel_log"][0] if v["kernel_log"] else ""
    return v["message"] or v["detail"] or ""


def lines(report: Any) -> list[Answer]:
    """Every SMMU's verdict per ruleset, in report order."""
    return [Answer(s["name"], name, v["decision"], v["rule"], _why(v), v.get("rule_certain", True))
            for s in report["smmus"] for name, v in s["verdicts"].items()]


def worst(s: Any) -> Any | None:
    """The most severe finding of one SMMU (the first of that severity), or None."""
    ranked = sorted(enumerate(s["findings"]), key=lambda x: (SEVERITY_ORDER.index(x[1]["severity"])
                                                             if x[1]["severity"] in SEVERITY_ORDER else 9, x[0]))
    return ranked[0][1] if ranked else None


def common_notes(verdicts: dict[str, Any]) -> list[str]:
    """Notes every ruleset carries (said once under the verdicts, not once per ruleset).

    >>> common_notes({"latest": {"notes": ["GERRORN not given", "x"]}, "v6": {"notes": ["GERRORN not given"]}})
    ['GERRORN not given']
    """
    vs = list(verdicts.values())
    if len(vs) < 2:
        return []
    return [n for n in vs[0]["notes"] if all(n in v["notes"] for v in vs[1:])]


def relevant_fields(config: str | None, fields: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """An STE's fields worth a reader's eye: every non-zero one, and the zero ones of the stages its
    Config uses; (fields, how many zero fields of unused stages were left out).

    >>> f = {"V": {"value": 1}, "S1FMT": {"value": 0}, "S2VMID": {"value": 0}, "S2TTB": {"value": "0x4000"}}
    >>> relevant_fields("s1", f)
    ({'V': {'value': 1}, 'S1FMT': {'value': 0}, 'S2TTB': {'value': '0x4000'}}, 1)
    """
    unused = {"s1": ("S2",), "s2": ("S1",), "nested": ()}.get(config or "", ("S1", "S2"))
    out = {k: v for k, v in fields.items()
           if not (k.startswith(unused) and unused and v.get("value") in (0, "0x0", "0"))}
    return out, len(fields) - len(out)

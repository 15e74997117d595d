"""The keys a scenario file may use, section by section: a misspelt key is an error, not a default.

``check(doc)`` walks the document and raises :class:`UsageError` naming the first unknown key, its
path in the file and the nearest known key (``log2szie`` -> ``log2size``).  Field maps (an STE's or
CD's ``fields``) must name fields of the declared layouts; ``registers`` must name registers.

>>> check({"name": "x", "smmus": [{"stream_table": {"base": 0, "log2szie": 16}}]})
Traceback (most recent call last):
...
smmu_forensics.errors.UsageError: scenario: smmus[0].stream_table: unknown key 'log2szie' (did you mean 'log2size'?)
"""

from __future__ import annotations

import difflib
from typing import Any

from smmu_forensics.errors import UsageError
from smmu_forensics.smmu import fields as L

__all__ = ["check", "REQUIRED"]

_RANGE = {"start", "size"}
_EXPECT = {"v6", "v7", "latest"}
_VERDICT = {"decision", "rule"}
_CORRUPTION = {"name", "smmu", "index", "span", "l2ptr", "sid", "field", "value", "cd", "ssid", "asid", "vmid", "config", "reg",
               "same_as", "start", "size", "offset"}
#: section -> (its keys, {key: section of its value (a list's items or a mapping)})
SECTIONS: dict[str, tuple[set[str], dict[str, str]]] = {
    "top": ({"name", "description", "machine", "smmus", "expect", "corruptions", "dump_level", "skip_formats", "kernel"},
            {"machine": "machine", "smmus": "smmu", "expect": "expect", "corruptions": "corruption", "kernel": "kernel"}),
    "kernel": ({"at", "layout", "firmware", "log", "extra_log", "pci", "decoys", "printk", "va_layout", "symbols"}, {"pci": "pci", "decoys": "decoy"}),
    "pci": ({"bdf", "vendor", "device", "class", "driver", "group"}, {}),
    "decoy": ({"base", "l2_base", "l1"}, {}),
    "machine": ({"page_size", "ram", "crashkernel", "excluded", "vmcoreinfo"},
                {"ram": "range", "crashkernel": "range", "excluded": "range"}),
    "range": (_RANGE, {}),
    "expect": (_EXPECT, {k: "verdict" for k in _EXPECT}),
    "verdict": (_VERDICT, {}),
    "corruption": (_CORRUPTION, {}),
    "smmu": ({"name", "base", "registers", "coherent", "stream_table", "cd_tables", "pgtables", "writes", "corruptions", "expect"},
             {"registers": "registers", "stream_table": "stream_table", "cd_tables": "cd_table", "pgtables": "pgtable",
              "writes": "write", "corruptions": "corruption", "expect": "expect"}),
    "registers": ({n.lower() for n in L.REGISTER_OFFSETS}, {}),
    "stream_table": ({"format", "base", "log2size", "split", "ra", "fill", "stes", "l2_base", "l2_for", "l1"},
                     {"stes": "ste", "l1": "l1std"}),
    "ste": ({"sid", "preset", "cd", "cdmax", "cd_format", "vmid", "s2ttb", "fields"}, {"fields": "ste_fields"}),
    "ste_fields": ({f.name for f in L.STE.fields if not f.reserved}, {}),
    "l1std": ({"index", "raw", "span", "l2ptr"}, {}),
    "cd_table": ({"addr", "format", "l1", "cds"}, {"l1": "l1cd", "cds": "cd"}),
    "l1cd": ({"index", "v", "l2ptr"}, {}),
    "cd": ({"ssid", "preset", "asid", "ttb0", "fields"}, {"fields": "cd_fields"}),
    "cd_fields": ({f.name for f in L.CD.fields if not f.reserved}, {}),
    "pgtable": ({"root", "pool", "stage", "map"}, {"map": "mapping"}),
    "mapping": ({"iova", "pa", "size", "writable"}, {}),
    "write": ({"addr", "hex", "qwords"}, {}),
}
#: keys whose value is a list (of the child section's mappings)
LISTS = {"ram", "excluded", "smmus", "corruptions", "pci", "decoys", "cd_tables", "pgtables", "writes", "stes", "l1", "cds", "map"}
#: keys a section cannot do without (a RAM range without ``start`` is an error, not a crash)
REQUIRED: dict[str, set[str]] = {"range": {"start", "size"}, "l1std": {"index"}, "l1cd": {"index"}, "mapping": {"iova", "pa"},
                                 "write": {"addr"}, "pgtable": {"root"}, "ste": {"sid"}, "cd_table": {"addr"}, "pci": {"bdf"}, "stream_table": {"base"},
                                 "decoy": {"base"}}
_CASELESS = {"registers", "ste_fields", "cd_fields"}  # register and field names are matched in any case


def check(doc: Any, section: str = "top", path: str = "") -> None:
    """Raise UsageError at the first key ``doc`` does not know; wrong shapes (a string for a mapping) too."""
    if section == "top" and not isinstance(doc, dict):
        raise UsageError("scenario: a scenario is a mapping")
    keys, children = SECTIONS[section]
    where = f"scenario: {path or 'top level'}"
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a mapping, got {type(doc).__name__}")
    missing = sorted(REQUIRED.get(section, set()) - {str(k) for k in doc})
    if missing:
        raise UsageError(f"{where}: missing key {missing[0]!r}")
    for k, v in doc.items():
        name = str(k).upper() if section in ("ste_fields", "cd_fields") else str(k).lower() if section in _CASELESS else str(k)
        if name not in keys:
            near = difflib.get_close_matches(name, sorted(keys), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(sorted(keys))})" if len(keys) <= 12 else ""
            raise UsageError(f"{where}: unknown key {k!r}{hint}")
        child = children.get(name)
        sub = f"{path}.{k}" if path else str(k)
        if child is None:
            continue
        if name in LISTS and not isinstance(v, list):
            raise UsageError(f"scenario: {sub}: expected a list, got {type(v).__name__ if v is not None else 'null'}")
        if v is None:
            raise UsageError(f"scenario: {sub}: expected a mapping, got null")
        if isinstance(v, list) and child not in ("range",) or (child == "range" and isinstance(v, list)):
            for i, item in enumerate(v):
                check(item, child, f"{sub}[{i}]")
        else:
            check(v, child, sub)

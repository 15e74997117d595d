"""The report model's shape, typed once: the model builders return these, the renderers read them,
mypy checks every key both sides spell, and a test holds ``schema.json`` to the same keys.

(``total=False`` bases instead of ``NotRequired``: the project supports Python 3.10.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

__all__ = ["Report", "DumpModel", "SmmuModel", "Features", "DecodedRegister", "FieldShown", "TableModel", "L1Row", "SteSummary",
           "SteRow", "CdTableRow", "VerdictModel", "L1VerdictRow", "StepRow", "FindingModel", "DmaModel", "PageTableRow",
           "LeafRow", "RangeRow", "SidDetail", "SidCdTable", "L1CdRow", "CdRow", "HoleRow", "EvidenceRow", "DiscoveryModel"]


class _FieldShown(TypedDict):
    value: int | str


class FieldShown(_FieldShown, total=False):
    meaning: str


class DecodedRegister(TypedDict):
    raw: str | None
    fields: dict[str, FieldShown]


class Features(TypedDict):
    sid_bits: int | None
    ssid_bits: int | None
    asid_bits: int | None
    vmid_bits: int | None
    feat_2lvl_strtab: bool | None
    coherent: bool | None
    coherent_basis: str


class L1Row(TypedDict):
    index: int
    raw: str | None
    span: int | None
    l2ptr: str | None
    status: str
    n_stes: int
    first_sid: str
    l2_in_dump: str
    alias_of: int | None


class SteSummary(TypedDict):
    walked: int
    in_dump: int
    valid: int
    by_config: dict[str, int]
    listed: int
    listing: str


class _SteRow(TypedDict):
    sid: int
    sid_hex: str | None
    addr: str | None
    in_dump: bool
    raw: str | None
    valid: bool | None
    config: str | None
    config_raw: int | None


class SteRow(_SteRow, total=False):
    fields: dict[str, FieldShown]  # valid STEs whose Config is not abort (every field with --sid)
    devices: list[str]  # the devices behind this StreamID, when the dump names them ("0000:00:01.0 [1af4:1042] virtio-pci")


class CdTableRow(TypedDict):
    addr: str | None
    s1fmt: int
    s1cdmax: int
    cds_nonzero: int
    in_dump: bool
    not_read: str | None


class _TableModel(TypedDict):
    format: str | None


class TableModel(_TableModel, total=False):
    why: str  # only when no table was walked (format None)
    fmt_raw: int
    base: str | None
    base_register: str | None
    ra: int
    cfg_register: str | None
    log2size: int
    split: int
    effective_log2size: int
    n_l1: int | None
    l1_bytes: int | None
    n_ste: int | None
    l1: Sequence[L1Row]  # a lazy L1Listing: streamed by the JSON writer
    ste_summary: SteSummary
    stes: Sequence[SteRow]  # a lazy SteListing: streamed by the JSON writer
    truncated: list[str]
    cd_tables: list[CdTableRow]


class L1VerdictRow(TypedDict):
    index: int
    result: str
    rule: str | None
    message: str | None


class StepRow(TypedDict):
    rule: str
    outcome: str
    detail: str


class VerdictModel(TypedDict):
    ruleset: str
    title: str
    decision: str
    rule: str | None
    rule_certain: bool
    errno: int | None
    errno_name: str | None
    message: str | None
    level: str | None
    detail: str
    kernel_log: list[str]
    l1: Sequence[L1VerdictRow]  # a lazy L1ResultListing
    trail: list[StepRow]
    unknown: list[str]
    notes: list[str]
    assumptions: list[str]  # what the decision takes for granted (registers a dump cannot record)


class FindingModel(TypedDict):
    id: str
    severity: str
    where: str
    message: str


class PageTableRow(TypedDict):
    level: int
    pa: str | None


class LeafRow(TypedDict):
    iova: str | None
    pa: str | None
    size: int
    writable: bool


class RangeRow(TypedDict):
    iova: str
    iova_end: str  # inclusive
    pa: str
    pa_end: str  # inclusive
    size: int
    page_size: int
    pages: int
    writable: bool


class DmaModel(TypedDict):
    kind: str
    sids: list[str]
    n_sids: int
    cd: str | None
    asid: int | None
    vmid: int | None
    ttb0: str | None
    granule: int | None
    start_level: int | None
    tables: list[PageTableRow]
    n_tables: int
    n_leaves: int
    mapped_bytes: int
    writable_leaves: int
    leaves: list[LeafRow]
    ranges: list[RangeRow]  # every mapping the walk recorded, merged (always complete unless ``complete`` is false)
    complete: bool  # the walk was not stopped by its budget
    problems: list[str]
    devices: list[str]


class L1CdRow(TypedDict):
    index: int
    raw: str | None
    status: str


class CdRow(TypedDict):
    ssid: int
    addr: str | None
    raw: str
    fields: dict[str, FieldShown]


class HoleRow(TypedDict):
    start: str | None
    end: str | None
    state: str


class SidCdTable(TypedDict):
    addr: str | None
    not_read: str
    l1cd: list[L1CdRow]
    cds: list[CdRow]
    holes: list[HoleRow]


class _SidDetail(TypedDict):
    sid: int
    found: bool


class SidDetail(_SidDetail, total=False):
    why: str  # not found: why
    sid_hex: str | None
    addr: str | None
    in_dump: bool
    raw: str | None
    valid: bool | None
    config: str | None
    config_raw: int | None
    fields: dict[str, FieldShown]
    cd_table: SidCdTable
    devices: list[str]


class _SmmuModel(TypedDict):
    name: str
    registers: dict[str, Any]
    decoded_registers: dict[str, DecodedRegister]
    features: Features
    table: TableModel
    verdicts: dict[str, VerdictModel]
    findings: list[FindingModel]
    dma: list[DmaModel]


class EvidenceRow(TypedDict):
    what: str
    source: str
    addr: str | None  # the physical address it was read at


class DiscoveryModel(TypedDict):
    sources: list[str]
    evidence: list[EvidenceRow]
    assumptions: list[str]
    notes: list[str]


class SmmuModel(_SmmuModel, total=False):
    sid_detail: SidDetail
    discovery: DiscoveryModel  # only when the registers were found in the dump, not given


class DumpModel(TypedDict):
    path: str
    format: str
    page_size: int
    osrelease: str | None


class Report(TypedDict):
    schema_version: int
    tool: str
    dump: DumpModel | None
    rulesets: list[str]
    smmus: list[SmmuModel]
    exit_code: int

"""The one place that runs the pipeline: open the dump, decode each SMMU, judge it, return a typed result.

::

    dumps/ (PhysicalMemory) -> smmu/ (Snapshot per SMMU) -> rules/ (Verdicts, Findings) -> Analysis

>>> from smmu_forensics.smmu.registers import load_register_file
>>> regs = load_register_file("fixtures/qemu-panic-carved.elf.smmu.json")
>>> with open_memory("fixtures/qemu-panic-carved.elf") as mem:
...     a = analyze(mem, regs, ["latest", "v6"])
>>> [(name, v.decision.value) for name, v in a.smmus[0].verdicts.items()], a.exit_code
([('latest', 'adopt'), ('v6', 'adopt')], 0)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from smmu_forensics.discover.driver import find_driver_copies
from smmu_forensics.discover.printk import LogError, read_log
from smmu_forensics.discover.smmus import SMMU_LINE, Discovery, FoundSmmu, discover
from smmu_forensics.discover.symbols import Symbols
from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.dumps.sniff import Progress, open_dump, parse_int
from smmu_forensics.dumps.source import open_regular
from smmu_forensics.errors import EXIT_OK, EXIT_REJECTED, EXIT_UNKNOWN, UnknownFormat
from smmu_forensics.rules.base import Decision, Verdict
from smmu_forensics.rules.engine import evaluate
from smmu_forensics.rules.findings import Finding, Severity, find
from smmu_forensics.rules.versions import DEFAULT, VERSIONS
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.dmamap import Hit, Range, merge, reaching, translate_iova
from smmu_forensics.smmu.pgtable import Translation
from smmu_forensics.smmu.reach import DmaReach
from smmu_forensics.smmu.registers import Registers, find_sidecar
from smmu_forensics.smmu.schemas import build
from smmu_forensics.smmu.snapshot import Snapshot, decode
from smmu_forensics.smmu.states import TableFormat

__all__ = ["Analysis", "DumpSummary", "SmmuResult", "analyze", "analyze_smmu", "open_memory", "rulesets", "exit_code",
           "discover_registers", "registers_of", "DmaAnswer", "ContextAnswer", "SteAnswer", "dma_query"]


@dataclass
class SmmuResult:
    """One SMMU: what was decoded, what each ruleset decides, what else is wrong."""

    snapshot: Snapshot
    verdicts: dict[str, Verdict]
    findings: list[Finding]
    discovery: FoundSmmu | None = None  # how its registers were found in the dump (None: given by the user)

    @property
    def devices(self) -> dict[int, list[str]]:
        """StreamID -> the devices behind it (known when the dump was searched)."""
        return self.discovery.devices if self.discovery is not None else {}

    @property
    def regs(self) -> Registers:
        return self.snapshot.regs


@dataclass
class DumpSummary:
    path: str
    format: str
    page_size: int
    osrelease: str | None


@dataclass
class Analysis:
    """Every SMMU of one dump under the selected rulesets; ``exit_code`` as README's table says."""

    dump: DumpSummary | None
    rulesets: list[str]
    smmus: list[SmmuResult] = field(default_factory=list)
    fail_on: Severity | None = None

    @property
    def exit_code(self) -> int:
        return exit_code(self.smmus, self.fail_on)


def rulesets(names: Sequence[str] = ()) -> list[str]:
    """The rulesets to replay: the default pair, ``all`` (newest first), or the names given, once each.

    >>> rulesets(()), rulesets(("all",)), rulesets(("v6", "v6"))
    (['latest', 'v6'], ['latest', 'v7', 'v6'], ['v6'])
    """
    if not names:
        return list(DEFAULT)
    if "all" in names:
        return list(reversed(VERSIONS))
    return list(dict.fromkeys(names))


def open_memory(dump: str, raw_base: int | None = None, progress: Progress | None = None) -> PhysicalMemory:
    """Open a dump; a headerless file whose sidecar records ``raw_base`` opens as raw memory there."""
    try:
        return open_dump(dump, raw_base=raw_base, progress=progress)
    except UnknownFormat as exc:
        side = find_sidecar(dump) if raw_base is None else None
        if side is None:
            raise
        try:
            with open_regular(side, "r") as f:
                side_base = json.load(f).get("raw_base")
        except (OSError, ValueError, AttributeError, RecursionError):
            raise exc from None
        if side_base is None:
            raise
        return open_dump(dump, raw_base=parse_int(str(side_base), f"raw_base in {side}"), progress=progress)


def analyze_smmu(mem: PhysicalMemory | None, regs: Registers, names: Sequence[str], max_stes: int | None = None,
                 found: FoundSmmu | None = None) -> SmmuResult:
    """Decode one SMMU's tables (when there is memory) and judge them under each ruleset."""
    recorded = None
    if mem is not None and found is None and regs.get("strtab_base") is not None and _worth_checking(mem):
        recorded = find_driver_copies(mem)  # registers given by hand: do they belong to this dump?
    snap = decode(mem, regs, max_stes, recorded)
    verdicts = {name: evaluate(VERSIONS[name], regs, snap.table) for name in names}
    return SmmuResult(snap, verdicts, find(snap), found)


#: registers given by hand are checked against the driver's copy in the dump when searching it is
#: cheap (a one-pass scan of at most this much readable memory); `discover` searches any size
CHECK_REGS_MAX_BYTES = 8 << 30


def _worth_checking(mem: PhysicalMemory) -> bool:
    """A kernel whose log shows an SMMUv3 driver, in a dump small enough to search in one pass."""
    if "SYMBOL(prb)" not in mem.vmcoreinfo():
        return False
    try:
        if not any(SMMU_LINE.match(r.text) for r in read_log(mem).records):
            return False
    except LogError:
        return False
    return sum(r.size for r in mem.ranges() if r.state.readable) <= CHECK_REGS_MAX_BYTES


def analyze(mem: PhysicalMemory | None, smmus: Sequence[Registers], names: Sequence[str],
            fail_on: Severity | None = None, max_stes: int | None = None, found: Sequence[FoundSmmu] = ()) -> Analysis:
    """The whole pipeline over every SMMU of one dump (``mem`` None: registers alone); ``found``
    (from :func:`discover_registers`) says how each register set was found, in the same order."""
    dump = None
    if mem is not None:
        dump = DumpSummary(mem.path, mem.format_name, mem.page_size, mem.vmcoreinfo().get("OSRELEASE"))
    a = Analysis(dump, list(names), fail_on=fail_on)
    a.smmus = [analyze_smmu(mem, r, names, max_stes, found[i] if i < len(found) else None) for i, r in enumerate(smmus)]
    return a


def discover_registers(mem: PhysicalMemory, syms: Symbols | None = None) -> tuple[Discovery, list[Registers], list[FoundSmmu]]:
    """Search the dump for its SMMUs (``syms``: kernel symbols the user has); registers for every
    one whose stream table was found."""
    d = discover(mem, syms)
    regs, found = [], []
    for s in d.smmus:
        r = registers_of(s)
        if r is not None:
            regs.append(r)
            found.append(s)
    return d, regs, found


def registers_of(s: FoundSmmu) -> Registers | None:
    """Register values reconstructed from what the dump holds; None when no stream table was found.

    IDR0 carries only the fields the sources give (2-level support, stages, CD2L, ASID/VMID width,
    COHACC as the kernel decided coherency); its other fields read 0 and nothing judges them.
    """
    c, t = s.copy, s.table
    if c is None and t is None:
        return None
    f = lambda name: int(bool(s.feature(name)))  # noqa: E731
    asid_bits = c.asid_bits if c else None
    vmid_bits = c.vmid_bits if c else None
    idr0 = {"ST_LEVEL": f("2_LVL_STRTAB"), "S1P": f("TRANS_S1"), "S2P": f("TRANS_S2"), "CD2L": f("2_LVL_CDTAB"),
            "COHACC": int(bool(s.coherent)), "ASID16": int(asid_bits != 8), "VMID16": int(vmid_bits != 8)}
    if c is not None:
        base, cfg, sid_bits, ssid_bits = c.strtab_base, c.strtab_base_cfg, c.sid_bits, c.ssid_bits
        if base is None or cfg is None:  # 6.12: rebuilt as arm_smmu_write_strtab() builds them
            if c.layout == "6.12-linear":  # LOG2SIZE = sid_bits, num_ents = 1 << sid_bits
                base, cfg = _strtab(c.strtab_dma, L.StrtabFmt.LINEAR, c.num_l1_ents.bit_length() - 1)
            else:
                base, cfg = _strtab(c.strtab_dma, L.StrtabFmt.TWO_LEVEL, c.num_l1_ents.bit_length() - 1 + L.STRTAB_SPLIT)
    else:
        assert t is not None
        fmt = L.StrtabFmt.TWO_LEVEL if t.fmt is TableFormat.TWO_LEVEL else L.StrtabFmt.LINEAR
        (base, cfg), sid_bits, ssid_bits = _strtab(t.base, fmt, t.log2size), t.log2size, None
    if asid_bits is None:
        s.assumptions.append("ASID and VMID widths taken as 16 bits: this kernel's layout does not record them where they were looked for")
    values: dict[str, object] = {
        "name": s.name,
        "strtab_base": base, "strtab_base_cfg": cfg,
        "cr0": _word(L.CR0, {"SMMUEN": 1}), "cr0ack": _word(L.CR0, {"SMMUEN": 1}), "gerror": 0, "gerrorn": 0,
    }
    if s.features is not None:
        values["idr0"] = _word(L.IDR0, idr0)
    if sid_bits is not None:
        values["idr1"] = _word(L.IDR1, {"SIDSIZE": sid_bits, "SSIDSIZE": ssid_bits or 0})
    oas = {bits: code for code, bits in L.OAS_BITS.items()}.get(s.oas or (c.oas if c else None) or 0)
    if oas is not None:
        values["idr5"] = _word(L.IDR5, {"OAS": oas})
    if s.base is not None:
        values["base"] = s.base
    r = Registers.from_mapping(values, "the dump (discovery)")
    r.name = s.name
    if s.coherent is not None:
        r.coherent_override, r.coherent_source = s.coherent, "the kernel's coherency (ARM_SMMU_FEAT_COHERENCY in the log's feature word)"
    return r


def _strtab(addr: int, fmt: L.StrtabFmt, log2size: int) -> tuple[int, int]:
    """STRTAB_BASE and STRTAB_BASE_CFG as Linux writes them (arm_smmu_write_strtab(): RA set, SPLIT 8)."""
    base = _word(L.STRTAB_BASE, {"ADDR": addr & L.STRTAB_BASE.field("ADDR").linux_mask, "RA": 1})
    fields = {"FMT": fmt, "LOG2SIZE": log2size} | ({"SPLIT": L.STRTAB_SPLIT} if fmt is L.StrtabFmt.TWO_LEVEL else {})
    return base, _word(L.STRTAB_BASE_CFG, fields)


def _word(lay: L.Layout, fields: dict[str, int]) -> int:
    return int.from_bytes(build(lay, fields), "little")


def exit_code(smmus: Sequence[SmmuResult], fail_on: Severity | None = None) -> int:
    """0 adopted, 1 rejected/not adoptable (or a finding at ``fail_on`` or worse), 4 unknown."""
    decisions = [v.decision for s in smmus for v in s.verdicts.values()]
    if any(d in (Decision.RESET, Decision.NO_ADOPT) for d in decisions):
        return EXIT_REJECTED
    if fail_on is not None and any(f.severity.at_least(fail_on) for s in smmus for f in s.findings):
        return EXIT_REJECTED
    if any(d is Decision.UNKNOWN for d in decisions) or not decisions:
        return EXIT_UNKNOWN
    return EXIT_OK


# -- DMA questions ---------------------------------------------------------------------------------
@dataclass
class ContextAnswer:
    """One translating context (a CD, or a stage-2 STE) of one SMMU, as the question needs it."""

    smmu: str
    context: DmaReach
    ranges: list[Range]
    translation: Translation | None = None  # with an IOVA asked


@dataclass
class SteAnswer:
    """A SID asked about: its STE's state when it does not translate (abort, bypass, absent)."""

    smmu: str
    sid: int
    config: str | None  # abort, bypass, s1, s2, nested, or None: no STE walked for it
    valid: bool
    note: str


@dataclass
class DmaAnswer:
    """``smmu-forensics dma``: the contexts asked about, one IOVA's translation, who reaches a PA."""

    sid: int | None
    ssid: int | None
    iova: int | None
    pa: int | None
    contexts: list[ContextAnswer] = field(default_factory=list)
    stes: list[SteAnswer] = field(default_factory=list)
    hits: list[tuple[str, Hit]] = field(default_factory=list)
    #: SIDs whose valid STE bypasses translation, by SMMU: they reach every physical address
    bypass: dict[str, list[int]] = field(default_factory=dict)
    #: why the answer may be partial (a walk stopped by its budget, a table missing from the dump)
    incomplete: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_UNKNOWN if self.incomplete else EXIT_OK


def dma_query(mem: PhysicalMemory, a: Analysis, sid: int | None = None, iova: int | None = None,
              pa: int | None = None, ssid: int | None = None) -> DmaAnswer:
    """Answer the DMA questions over an analysed dump (``mem`` still open for translations).

    >>> from smmu_forensics.smmu.registers import load_register_file
    >>> regs = load_register_file("fixtures/qemu-panic-carved.elf.smmu.json")
    >>> with open_memory("fixtures/qemu-panic-carved.elf") as mem:
    ...     ans = dma_query(mem, analyze(mem, regs, ["latest"]), sid=8, iova=0xffffa000)
    >>> [hex(c.translation.pa) for c in ans.contexts], ans.exit_code
    (['0x431cf000'], 0)
    """
    ans = DmaAnswer(sid, ssid, iova, pa)
    for s in a.smmus:
        name, t = s.regs.name, s.snapshot.table
        if t is None:
            ans.incomplete.append(f"{name}: no stream table walked")
            continue
        if t.truncated:
            ans.incomplete += [f"{name}: {why}" for why in t.truncated]
        valid, cfg = t.valid(), t.configs()
        byp = t.sids[valid & (cfg == L.SteConfig.BYPASS)]
        if sid is not None:
            byp = byp[byp == sid]
        if len(byp):
            ans.bypass[name] = [int(x) for x in byp.tolist()]
        for c in s.snapshot.reach.contexts:
            if sid is not None and sid not in c.sids or ssid is not None and c.ssid != ssid:
                continue
            w = c.walk
            if w is not None and w.truncated:
                ans.incomplete.append(f"{name}: the walk of {c.ttb:#x} stopped at its budget ({w.n_leaves} mappings seen)")
            tr = translate_iova(mem, w, iova) if iova is not None and w is not None else None
            if tr is not None and tr.pa is None and any(st.desc is None for st in tr.steps):
                ans.incomplete.append(f"{name}: IOVA {iova:#x} via {c.ttb:#x}: {tr.why}")
            ans.contexts.append(ContextAnswer(name, c, merge(w.leaves) if w is not None else [], tr))
            if pa is not None:
                ans.hits += [(name, h) for h in reaching([c], pa)]
        if sid is not None:
            i = t.find_sid(sid)
            if i is None:
                ans.stes.append(SteAnswer(name, sid, None, False, "no STE walked for this SID"))
            elif not any(x.smmu == name for x in ans.contexts):
                config = L.SteConfig(int(cfg[i])).label
                v = bool(valid[i])
                note = ("invalid STE: the SMMU aborts its DMA" if not v and t.known[i] else
                        "the STE is not in the dump" if not t.known[i] else
                        "DMA aborted" if config == "abort" else
                        "translation bypassed: DMA reaches every physical address" if config == "bypass" else
                        "no walked context (its CDs or tables are invalid or missing)")
                if not t.known[i]:
                    ans.incomplete.append(f"{name}: the STE of SID {sid:#x} is not in the dump")
                ans.stes.append(SteAnswer(name, sid, config, v, note))
    return ans

"""Register consistency: CR0 vs CR0ACK, coherency, global errors, GBPA, STRTAB_BASE's high bits."""

from __future__ import annotations

from smmu_forensics.rules.findings.collect import Collector, Severity
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.fields import get
from smmu_forensics.smmu.recorded import DriverCopy
from smmu_forensics.smmu.registers import Registers
from smmu_forensics.smmu.table import StreamTable

__all__ = ["check", "against_dump"]


def check(regs: Registers, out: Collector) -> None:
    cr0, ack = regs.get("cr0"), regs.get("cr0ack")
    if cr0 is not None and ack is not None and cr0 != ack:
        out.add("REG-CR0ACK", Severity.WARNING, "CR0", f"CR0={cr0:#x} but CR0ACK={ack:#x}: an update was in flight at the crash")
    if regs.coherent_override is not None and regs.cohacc is not None and regs.coherent_override != regs.cohacc:
        out.add("REG-COHACC-MISMATCH", Severity.WARNING, "IDR0.COHACC",
                f"firmware says coherent={regs.coherent_override} but IDR0.COHACC={int(regs.cohacc)}: "
                "tables dirty in CPU caches may not be what the SMMU walks")
    if regs.coherent is False:
        out.add("REG-NONCOHERENT", Severity.ERROR, "coherency",
                "non-coherent SMMU: no version of the series adopts its table; in-flight DMA is aborted by the reset")
    _gerror(regs, out)
    if cr0 is not None and not get(L.CR0, cr0, "SMMUEN"):
        gbpa = regs.get("gbpa")
        if gbpa is not None and not get(L.GBPA, gbpa, "ABORT"):
            out.add("REG-GBPA-BYPASS", Severity.CRITICAL, "GBPA",
                    "SMMUEN=0 and GBPA.ABORT=0: every device's DMA bypasses translation and reaches all memory")
    _strtab_base(regs, out)
    idr1, idr0 = regs.get("idr1"), regs.get("idr0")
    if idr0 is not None and idr1 is not None and get(L.IDR1, idr1, "SIDSIZE") >= 7 and get(L.IDR0, idr0, "ST_LEVEL") == 0:
        out.add("REG-IDR-INCONSISTENT", Severity.WARNING, "IDR0/IDR1", "SIDSIZE >= 7 requires IDR0.ST_LEVEL != 0 [S-IDR1]")


def against_dump(regs: Registers, recorded: list[DriverCopy] | None, t: StreamTable | None, out: Collector) -> None:
    """Registers given by hand that do not belong to this dump: another run's file, another machine's."""
    sb = regs.get("strtab_base")
    if sb is None:
        return
    base = L.linux_get(L.STRTAB_BASE, sb, "ADDR")
    if recorded:
        mine = [c for c in recorded if c.strtab_dma & L.STRTAB_BASE.field("ADDR").linux_mask == base]
        if not mine:
            seen = ", ".join(f"table {c.strtab_dma:#x} (at {c.addr:#x})" for c in recorded[:4])
            out.add("REG-NOT-THIS-DUMP", Severity.ERROR, "STRTAB_BASE",
                    f"STRTAB_BASE {sb:#x} is not what the crashed kernel recorded ({seen}): these registers may belong to another run")
        elif mine[0].strtab_base_cfg is not None and mine[0].strtab_base_cfg != regs.get("strtab_base_cfg"):
            out.add("REG-NOT-THIS-DUMP", Severity.ERROR, "STRTAB_BASE_CFG",
                    f"STRTAB_BASE_CFG {regs.get('strtab_base_cfg')} is not the {mine[0].strtab_base_cfg:#x} the crashed kernel recorded")
    cr0 = regs.get("cr0")
    if t is not None and len(t.words) and cr0 is not None and get(L.CR0, cr0, "SMMUEN") and t.known.all() and not t.valid().any():
        out.add("REG-TABLE-EMPTY", Severity.ERROR, "STRTAB_BASE",
                f"SMMUEN=1 but not one of the {len(t.words)} STEs walked at {base:#x} is valid: a table Linux never leaves; "
                "the registers may not belong to this dump")


def _gerror(regs: Registers, out: Collector) -> None:
    ge, gn = regs.get("gerror"), regs.get("gerrorn")
    if ge is None:
        return
    active = ge ^ (gn if gn is not None else ge)
    if get(L.GERROR, active, "SFM_ERR"):
        out.add("REG-SFM", Severity.ERROR, "GERROR", "SMMU in Service Failure Mode: it no longer translates reliably")
    names = [f.name for f in L.GERROR.fields if not f.reserved and get(L.GERROR, active, f.name) and f.name != "SFM_ERR"]
    if names:
        out.add("REG-GERROR", Severity.WARNING, "GERROR", "active global errors: " + ", ".join(names))


def _strtab_base(regs: Registers, out: Collector) -> None:
    sb = regs.get("strtab_base")
    if sb is None:
        return
    addr = get(L.STRTAB_BASE, sb, "ADDR")
    if addr != L.linux_get(L.STRTAB_BASE, sb, "ADDR"):
        out.add("REG-BASE-HIGH", Severity.WARNING, "STRTAB_BASE",
                f"STRTAB_BASE={sb:#x} has address bits 55:52 set: Linux masks them off (GENMASK(51,6)), the SMMU may not")
    idr5 = regs.get("idr5")
    if idr5 is not None:
        bits = L.OAS_BITS[get(L.IDR5, idr5, "OAS")]
        if addr >> bits:
            out.add("REG-BASE-OAS", Severity.WARNING, "STRTAB_BASE", f"table address {addr:#x} is above IDR5.OAS ({bits} bits): RES0")

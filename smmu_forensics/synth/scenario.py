"""Scenario files (YAML or TOML) -> memory image, register sidecar and expected verdicts.

Every SMMU structure is built through the Construct schemas of :mod:`smmu_forensics.smmu.schemas`
(the same ones that decode), never hand-packed.  The format is documented with examples in
``smmu-forensics synth --spec`` (smmu_forensics/synth/scenarios.md); ``fixtures/scenarios/`` is the catalogue.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smmu_forensics.dumps.source import open_regular
from smmu_forensics.errors import UsageError
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.lpae import LPAE_S1, LPAE_S2, DescType
from smmu_forensics.smmu.schemas import build
from smmu_forensics.synth import keys
from smmu_forensics.synth.image import MemoryImage


def _int(v: Any, what: str) -> int:
    """A number of the scenario: an integer or a string in any base, 0 <= n < 2^64."""
    n: int | None = None
    if isinstance(v, bool):
        n = int(v)
    elif isinstance(v, int):
        n = v
    elif isinstance(v, str) and len(v) <= 80:
        try:
            n = int(v.replace("_", ""), 0)
        except ValueError:
            pass
    if n is None:
        raise UsageError(f"scenario: {what}: {str(v)[:40]!r} is not a number")
    if not 0 <= n < 1 << 64:
        raise UsageError(f"scenario: {what}: {n} is out of range (0 to 2^64-1)")
    return n


#: RAM a scenario may claim in all (synth builds it in memory and writes it out); override with
#: SMMU_FORENSICS_SYNTH_MAX_RAM (bytes)
DEFAULT_SYNTH_MAX_RAM = 4 << 30


def _reg_value(v: Any, layout: L.Layout | None, what: str) -> int:
    """A register as a number or a {FIELD: value} map built through the schema."""
    if isinstance(v, dict):
        if layout is None:
            raise UsageError(f"scenario: {what}: field maps are not supported for this register")
        raw = build(layout, {k.upper(): _int(x, f"{what}.{k}") for k, x in v.items()})
        return int.from_bytes(raw, "little")
    return _int(v, what)


STE_PRESETS: dict[str, dict[str, int]] = {
    "abort": {"V": 1, "CONFIG": L.STE_CFG_ABORT},
    "bypass": {"V": 1, "CONFIG": L.STE_CFG_BYPASS, "SHCFG": 1},
    "s1": {"V": 1, "CONFIG": L.STE_CFG_S1, "S1DSS": 2, "S1CIR": 1, "S1COR": 1, "S1CSH": 3},
    "s2": {"V": 1, "CONFIG": L.STE_CFG_S2, "S2T0SZ": 16, "S2SL0": 2, "S2IR0": 1, "S2OR0": 1, "S2SH0": 3, "S2PS": 4, "S2AA64": 1, "S2R": 1},
    "nested": {"V": 1, "CONFIG": L.STE_CFG_NESTED, "S1DSS": 2, "S2T0SZ": 16, "S2SL0": 2, "S2PS": 4, "S2AA64": 1, "S2R": 1},
    "zero": {},
}
# as Linux writes a DMA-domain CD (arm_smmu_write_ctx_desc / arm_smmu_make_s1_cd)
CD_LINUX = {"T0SZ": 16, "TG0": 0, "IR0": 1, "OR0": 1, "SH0": 3, "EPD1": 1, "V": 1, "IPS": 4, "AA64": 1, "R": 1, "A": 1, "ASET": 1,
            "MAIR0": 0xF404FF44, "MAIR1": 0xFFFFFFFF}


@dataclass
class Built:
    image: MemoryImage
    smmus: list[dict[str, Any]]
    expect: list[dict[str, Any]]
    name: str = ""
    dump_level: int = 1
    notes: list[str] = field(default_factory=list)


def load(path: str) -> dict[str, Any]:
    try:
        with open_regular(path) as f:
            raw = f.read(1 << 22)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
                import tomli as tomllib  # type: ignore[no-redef]

            doc = tomllib.loads(raw.decode())
        else:
            import yaml

            doc = yaml.safe_load(raw)
    except Exception as exc:
        raise UsageError(f"{path}: not a valid scenario file: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: a scenario is a mapping")
    try:
        keys.check(doc)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc.message}") from None
    doc.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return doc


class _Pool:
    """Bump allocator for page tables inside a region the scenario names."""

    def __init__(self, start: int) -> None:
        self.next = start

    def take(self, size: int, align: int) -> int:
        self.next = -(-self.next // align) * align
        a = self.next
        self.next += size
        return a


def _pgtables(img: MemoryImage, spec: dict[str, Any]) -> None:
    """A 4 KiB-granule, 48-bit table (levels 0-3) with the listed page mappings.

    ``stage: 1`` (default) as for a CD's TTB0 (T0SZ 16); ``stage: 2`` as for an STE's S2TTB with
    S2T0SZ 16, S2SL0 2 (the ``s2`` STE preset): leaves carry S2AP and MemAttr instead of AP.
    """
    stage = _int(spec.get("stage", 1), "pgtables.stage")
    root = _int(spec["root"], "pgtables.root")
    pool = _Pool(_int(spec.get("pool", root + 0x1000), "pgtables.pool"))
    tables: dict[tuple[int, int], int] = {(0, 0): root}
    for m in spec.get("map", []):
        iova, pa = _int(m["iova"], "map.iova"), _int(m["pa"], "map.pa")
        size = _int(m.get("size", 0x1000), "map.size")
        for off in range(0, size, 0x1000):
            va, out = iova + off, pa + off
            table = root
            for level in range(3):
                idx = (va >> (39 - 9 * level)) & 0x1FF
                key = (level + 1, va >> (39 - 9 * level))
                if key not in tables:
                    tables[key] = pool.take(0x1000, 0x1000)
                    img.write(table + 8 * idx, build(LPAE_S1, {"TYPE": DescType.TABLE_OR_PAGE, "OA": tables[key]}))
                table = tables[key]
            idx = (va >> 12) & 0x1FF
            writable = bool(m.get("writable", True))
            if stage == 2:  # S2AP read (+ write), MemAttr 0xf (normal WB): ARM_LPAE_PTE_HAP_*, _MEMATTR_OIWB
                pte = build(LPAE_S2, {"TYPE": DescType.TABLE_OR_PAGE, "MEMATTR": 0xF, "S2AP": 3 if writable else 1, "SH": 3, "AF": 1,
                                      "OA": out})
            else:  # AP[2] set: read-only
                pte = build(LPAE_S1, {"TYPE": DescType.TABLE_OR_PAGE, "AP": 0 if writable else 2, "SH": 3, "AF": 1, "OA": out})
            img.write(table + 8 * idx, pte)


def build_scenario(doc: dict[str, Any]) -> Built:
    """The memory image, registers and expectations a scenario describes; a value the layouts
    cannot hold (an L2Ptr with bits below 64-byte alignment, a field wider than its bits) is a
    one-line :class:`UsageError` naming it."""
    try:
        return _build_scenario(doc)
    except ValueError as exc:  # schemas.build: "FIELD=value does not fit bits [hi:lo]" and the like
        raise UsageError(f"scenario: cannot build: {exc}") from None
    except KeyError as exc:  # a key the builder needs and keys.REQUIRED does not list yet
        raise UsageError(f"scenario: missing key {str(exc)[:60]}") from None


def _build_scenario(doc: dict[str, Any]) -> Built:
    mach = doc.get("machine", {}) or {}
    ps = _int(mach.get("page_size", 4096), "machine.page_size")
    if ps not in (4096, 16384, 65536):
        raise UsageError("scenario: machine.page_size must be 4096, 16384 or 65536")
    img = MemoryImage(page_size=ps)
    for r in mach.get("ram", [{"start": 0x40000000, "size": 0x2000000}]):
        img.ram.append((_int(r["start"], "ram.start"), _int(r["size"], "ram.size")))
    try:
        limit = int(os.environ.get("SMMU_FORENSICS_SYNTH_MAX_RAM", DEFAULT_SYNTH_MAX_RAM))
    except ValueError:
        limit = DEFAULT_SYNTH_MAX_RAM
    if sum(n for _, n in img.ram) > limit:
        raise UsageError(f"scenario: machine.ram claims {sum(n for _, n in img.ram)} bytes, more than synth builds "
                         f"({limit}; SMMU_FORENSICS_SYNTH_MAX_RAM)")
    if any(n == 0 or n % ps or s % ps or s + n > 1 << 52 for s, n in img.ram):
        raise UsageError(f"scenario: machine.ram: every range needs a non-zero size, {ps}-byte alignment and to end below 2^52")
    ck = mach.get("crashkernel")
    if ck:  # /proc/vmcore leaves the crashkernel reservation out of the dump
        a, n = _int(ck["start"], "crashkernel.start"), _int(ck["size"], "crashkernel.size")
        new = []
        for s, sz in img.ram:
            if a >= s + sz or a + n <= s:
                new.append((s, sz))
                continue
            if a > s:
                new.append((s, a - s))
            if a + n < s + sz:
                new.append((a + n, s + sz - a - n))
        img.ram = new
    for r in mach.get("excluded", []):
        img.excluded.append((_int(r["start"], "excluded.start"), _int(r["size"], "excluded.size")))
    img.vmcoreinfo = {str(k): str(v) for k, v in (mach.get("vmcoreinfo") or {}).items()}
    smmus_out = []
    expect_out = []
    for i, s in enumerate(doc.get("smmus", [])):
        regs, ctx = _build_smmu(img, s, i)
        for c in s.get("corruptions", []) + [c for c in doc.get("corruptions", []) if _int(c.get("smmu", 0), "corruptions.smmu") == i]:
            try:
                _corrupt(img, regs, ctx, c)
            except (KeyError, IndexError) as exc:  # names an L1 entry, STE, CD or table the scenario does not build
                raise UsageError(f"scenario: corruption {str(c.get('name'))[:40]!r}: refers to {str(exc)[:60]}, "
                                 "which this scenario does not build") from None
        smmus_out.append(regs)
        exp = s.get("expect") or (doc.get("expect") if i == 0 else None)
        if exp:
            expect_out.append({"name": regs["name"], "verdicts": exp})
    if doc.get("kernel") is not None:
        from smmu_forensics.synth.kernel import write_kernel

        write_kernel(img, doc["kernel"], smmus_out)
    return Built(img, smmus_out, expect_out, str(doc.get("name", "")), int(doc.get("dump_level", 1)))


def _build_smmu(img: MemoryImage, s: dict[str, Any], i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    name = str(s.get("name", f"smmu{i}"))
    regs: dict[str, Any] = {"name": name}
    if "base" in s:
        regs["base"] = hex(_int(s["base"], "smmu.base"))
    defaults = {"idr0": 0x0D40101A, "idr1": 0x02730010, "idr5": 0x74, "cr0": 0xD, "cr0ack": 0xD, "gbpa": 0, "gerror": 0, "gerrorn": 0}
    given = {k.lower(): v for k, v in (s.get("registers") or {}).items()}
    for k, v in {**defaults, **given}.items():
        if v is None:
            continue
        regs[k] = hex(_reg_value(v, L.REGISTER_LAYOUTS.get(k), f"registers.{k}"))
    if "coherent" in s:
        regs["coherent"] = bool(s["coherent"])
    ctx: dict[str, Any] = {"l1": {}, "cds": {}}
    st = s.get("stream_table")
    if st:
        _build_table(img, st, regs, ctx)
    for ct in s.get("cd_tables", []):
        _build_cd_table(img, ct, ctx)
    for pt in s.get("pgtables", []):
        _pgtables(img, pt)
    for w in s.get("writes", []):
        a = _int(w["addr"], "writes.addr")
        if "hex" in w:
            img.write(a, bytes.fromhex(str(w["hex"])))
        for j, q in enumerate(w.get("qwords", [])):
            img.write(a + 8 * j, _int(q, "writes.qwords").to_bytes(8, "little"))
    return regs, ctx


def _ste_bytes(e: dict[str, Any]) -> bytes:
    preset = str(e.get("preset", "abort"))
    if preset not in STE_PRESETS:
        raise UsageError(f"scenario: unknown STE preset {preset!r} ({', '.join(STE_PRESETS)})")
    f = dict(STE_PRESETS[preset])
    if "cd" in e:
        f["S1CONTEXTPTR"] = _int(e["cd"], "ste.cd")
        f["S1CDMAX"] = _int(e.get("cdmax", 0), "ste.cdmax")
        f["S1FMT"] = {"linear": 0, "64k_l2": 2}.get(str(e.get("cd_format", "linear")), 0)
    if "vmid" in e:
        f["S2VMID"] = _int(e["vmid"], "ste.vmid")
    if "s2ttb" in e:
        f["S2TTB"] = _int(e["s2ttb"], "ste.s2ttb")
    for k, v in (e.get("fields") or {}).items():
        f[str(k).upper()] = _int(v, f"ste.fields.{k}")
    try:
        return build(L.STE, f)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"scenario: STE {e.get('sid')}: {exc}") from None


def _build_table(img: MemoryImage, st: dict[str, Any], regs: dict[str, Any], ctx: dict[str, Any]) -> None:
    fmt = st.get("format", "2lvl")
    fmt_n = {"linear": 0, "2lvl": 1}.get(fmt, None) if isinstance(fmt, str) else _int(fmt, "format")
    if fmt_n is None:
        raise UsageError("scenario: stream_table.format is linear, 2lvl or a number")
    base = _int(st["base"], "stream_table.base")
    log2size = _int(st.get("log2size", 16 if fmt_n == 1 else 8), "log2size")
    split = _int(st.get("split", 8), "split")
    regs["strtab_base"] = hex(int.from_bytes(build(L.STRTAB_BASE, {"ADDR": base & L.genmask(55, 6), "RA": int(bool(st.get("ra", True)))}), "little"))
    regs["strtab_base_cfg"] = hex(int.from_bytes(build(L.STRTAB_BASE_CFG, {"FMT": fmt_n, "SPLIT": split & 0x1F, "LOG2SIZE": log2size & 0x3F}), "little"))
    ctx["base"], ctx["fmt"], ctx["log2size"], ctx["split"] = base, fmt_n, log2size, split
    fill = str(st.get("fill", "abort"))
    fill_ste = _ste_bytes({"preset": fill})
    stes = {_int(e["sid"], "ste.sid"): _ste_bytes(e) for e in st.get("stes", [])}
    if fmt_n == 1:
        l2_base = _int(st.get("l2_base", base + 0x100000), "l2_base")
        nsplit = 1 << split if split <= 12 else 256
        l2_bytes = nsplit * 64
        groups = sorted({sid >> split for sid in stes} | {_int(x, "l2_for") for x in st.get("l2_for", [])})
        for j, grp in enumerate(groups):
            l2 = l2_base + j * l2_bytes
            ctx["l1"][grp] = l2
            img.write(base + 8 * grp, build(L.L1STD, {"SPAN": split + 1, "L2PTR": l2}))
            block = bytearray(fill_ste * nsplit)
            for sid, raw in stes.items():
                if sid >> split == grp:
                    off = (sid & (nsplit - 1)) * 64
                    block[off : off + 64] = raw
            img.write(l2, bytes(block))
        for e in st.get("l1", []):
            idx = _int(e["index"], "l1.index")
            if "raw" in e:
                desc = _int(e["raw"], "l1.raw")
            else:
                fields_ = {"SPAN": _int(e.get("span", split + 1), "l1.span"), "L2PTR": _int(e.get("l2ptr", 0), "l1.l2ptr")}
                desc = int.from_bytes(build(L.L1STD, fields_), "little")
            img.write(base + 8 * idx, desc.to_bytes(8, "little"))
            ctx["l1"][idx] = desc & L.LINUX_L1_DESC_L2PTR_MASK
    else:
        n = 1 << min(log2size, 20)
        block = bytearray(fill_ste * n)
        for sid, raw in stes.items():
            if sid < n:
                block[sid * 64 : sid * 64 + 64] = raw
        img.write(base, bytes(block))


def _build_cd_table(img: MemoryImage, ct: dict[str, Any], ctx: dict[str, Any]) -> None:
    addr = _int(ct["addr"], "cd_tables.addr")
    fmt = str(ct.get("format", "linear"))
    for e in ct.get("l1", []):
        raw = build(L.L1CD, {"V": _int(e.get("v", 1), "l1.v"), "L2PTR": _int(e.get("l2ptr", 0), "l1.l2ptr")})
        img.write(addr + 8 * _int(e["index"], "l1.index"), raw)
    for e in ct.get("cds", []):
        ssid = _int(e.get("ssid", 0), "cd.ssid")
        f = dict(CD_LINUX) if e.get("preset", "linux") == "linux" else {}
        if "asid" in e:
            f["ASID"] = _int(e["asid"], "cd.asid")
        if "ttb0" in e:
            f["TTB0"] = _int(e["ttb0"], "cd.ttb0")
        for k, v in (e.get("fields") or {}).items():
            f[str(k).upper()] = _int(v, f"cd.fields.{k}")
        if fmt == "64k_l2":
            l1 = [x for x in ct.get("l1", []) if _int(x["index"], "l1.index") == ssid // L.CTXDESC_L2_ENTRIES]
            if not l1:
                raise UsageError(f"scenario: CD SSID {ssid} has no L1CD entry in table {addr:#x}")
            where = _int(l1[0]["l2ptr"], "l1.l2ptr") + (ssid % L.CTXDESC_L2_ENTRIES) * 64
        else:
            where = addr + ssid * 64
        img.write(where, build(L.CD, f))
        ctx["cds"][(addr, ssid)] = where


def _corrupt(img: MemoryImage, regs: dict[str, Any], ctx: dict[str, Any], c: dict[str, Any]) -> None:
    """Named corruptions (``synth --spec`` lists them)."""
    name = str(c.get("name"))
    base = ctx.get("base", 0)

    def l1_rw(idx: int) -> tuple[int, int]:
        raw = int.from_bytes(img.read(base + 8 * idx, 8), "little")
        return raw & 0x1F, raw & L.LINUX_L1_DESC_L2PTR_MASK

    def l1_set(idx: int, span: int, l2: int) -> None:
        img.write(base + 8 * idx, build(L.L1STD, {"SPAN": span, "L2PTR": l2}))

    if name == "l1-span":
        i = _int(c["index"], "index")
        _, l2 = l1_rw(i)
        l1_set(i, _int(c["span"], "span"), l2)
    elif name == "l1-null-l2ptr":
        i = _int(c["index"], "index")
        span, _ = l1_rw(i)
        l1_set(i, span or 9, 0)
    elif name == "l1-misalign-l2ptr":
        i = _int(c["index"], "index")
        span, l2 = l1_rw(i)
        l1_set(i, span, l2 + _int(c.get("offset", 0x40), "offset"))
    elif name == "l1-alias":
        i, j = _int(c["index"], "index"), _int(c["same_as"], "same_as")
        _, l2 = l1_rw(j)
        l1_set(i, 9, l2)
    elif name == "l1-self":
        i = _int(c["index"], "index")
        l1_set(i, 9, base & ~0x3FFF)
    elif name in ("ste-config", "ste-vmid", "ste-field"):
        sid = _int(c["sid"], "sid")
        addr = _ste_addr(img, ctx, sid)
        words = list(np.frombuffer(img.read(addr, 64), dtype="<u8").tolist())
        from smmu_forensics.smmu.schemas import parse

        f = parse(L.STE, img.read(addr, 64))
        if name == "ste-config":
            f["CONFIG"] = _int(c.get("config", 2), "config")
        elif name == "ste-vmid":
            f["S2VMID"] = _int(c.get("vmid", 0), "vmid")
        else:
            f[str(c["field"]).upper()] = _int(c["value"], "value")
        del words
        img.write(addr, build(L.STE, f))
    elif name == "cd-asid":
        where = ctx["cds"][(_int(c["cd"], "cd"), _int(c.get("ssid", 0), "ssid"))]
        from smmu_forensics.smmu.schemas import parse

        f = parse(L.CD, img.read(where, 64))
        f["ASID"] = _int(c.get("asid", 0), "asid")
        img.write(where, build(L.CD, f))
    elif name == "register":
        regs[str(c["reg"]).lower()] = hex(_int(c["value"], "value"))
    elif name == "exclude":
        img.excluded.append((_int(c["start"], "start"), _int(c.get("size", img.page_size), "size")))
    else:
        raise UsageError(f"scenario: unknown corruption {name!r}")


def _ste_addr(img: MemoryImage, ctx: dict[str, Any], sid: int) -> int:
    if ctx.get("fmt") == 1:
        split = ctx["split"]
        l2 = ctx["l1"].get(sid >> split)
        if l2 is None:
            raise UsageError(f"scenario: SID {sid:#x} has no L2 table")
        return int(l2 + (sid & ((1 << split) - 1)) * 64)
    return int(ctx["base"] + sid * 64)


def write_outputs(built: Built, out: str, fmt: str) -> list[str]:
    """Write the dump, ``OUT.smmu.json`` and (if declared) ``OUT.expected.json``; return the paths."""
    from smmu_forensics.synth.writers import write

    extra = write(built.image, out, fmt, built.dump_level)
    side = {"smmus": built.smmus, **extra}
    paths = [out, out + ".smmu.json"]
    with open(out + ".smmu.json", "w") as f:
        json.dump(side, f, indent=1)
    if built.image.symbols:
        with open(out + ".System.map", "w") as f:
            f.writelines(f"{a:016x} {'R' if n.endswith('ops') else 'd'} {n}\n" for n, a in sorted(built.image.symbols.items(), key=lambda x: x[1]))
        paths.append(out + ".System.map")
    if built.expect:
        with open(out + ".expected.json", "w") as f:
            json.dump({"scenario": built.name, "smmus": built.expect}, f, indent=1)
        paths.append(out + ".expected.json")
    return paths

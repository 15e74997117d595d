"""Register input -> :class:`Registers` (one SMMU each).

MMIO registers are never in a RAM dump; they come from the user:

* a JSON file: one SMMU as a flat object (``registers.json`` of ../shared/captures as it is), or
  ``{"smmus": [ {...}, ... ]}``; keys ``name``, ``base``/``smmu_base``, ``coherent`` and any of
  the register names in :data:`REGISTER_NAMES` (hex strings or integers);
* a sidecar ``DUMP.smmu.json`` next to the dump (same shape), found automatically;
* command-line flags for one SMMU (``--strtab-base 0x...`` ...);
* a raw register page: the first 4 KiB or 64 KiB of the SMMU's MMIO, read as a file.

Example::

    >>> r = Registers.from_mapping({"idr1": "0x2730010", "strtab_base_cfg": 0x10210})
    >>> r.sid_bits, r.get("strtab_base")
    (16, None)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from smmu_forensics.dumps.source import open_regular
from smmu_forensics.errors import UsageError
from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu.fields import get

REGISTER_NAMES = (
    "idr0", "idr1", "idr2", "idr3", "idr4", "idr5", "iidr", "aidr", "cr0", "cr0ack", "cr1", "cr2",
    "statusr", "gbpa", "irq_ctrl", "irq_ctrlack", "gerror", "gerrorn", "strtab_base", "strtab_base_cfg",
    "cmdq_base", "cmdq_prod", "cmdq_cons", "eventq_base", "eventq_prod", "eventq_cons",
)
_ALIASES = {"smmu_base": "base", "evtq_base": "eventq_base", "evtq_prod": "eventq_prod", "evtq_cons": "eventq_cons"}
_REG_BITS = {n: 64 if n in ("strtab_base", "cmdq_base", "eventq_base") else 32 for n in REGISTER_NAMES}


#: keys a register file may carry besides registers (captures record where the values came from)
METADATA_KEYS = frozenset({"source", "comment", "description", "note", "notes", "origin", "raw_base"})
KNOWN_KEYS = frozenset({*REGISTER_NAMES, *_ALIASES, "base", "name", "coherent", *METADATA_KEYS})
MAX_JSON_DEPTH = 32


def _unknown_key(where: str, key: str, index: int) -> str:
    """The one-line error for a key nobody knows, with the nearest known one.

    >>> _unknown_key("r.json", "strtab_base_cfgg", 0)
    "r.json: SMMU #0: unknown key 'strtab_base_cfgg' (did you mean 'strtab_base_cfg'?)"
    """
    import difflib

    near = difflib.get_close_matches(key.lower(), sorted(KNOWN_KEYS), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else " (not a register file: keys are register names such as idr0, cr0, strtab_base, and base, name, coherent)"
    return f"{where}: SMMU #{index}: unknown key {key!r}{hint}"


def _depth(doc: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON, stopping at ``limit`` (no recursion: a hostile file may nest 10^5 deep)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        x, d = stack.pop()
        deepest = max(deepest, d)
        if d >= limit:
            return d
        if isinstance(x, dict):
            stack += [(v, d + 1) for v in x.values()]
        elif isinstance(x, list):
            stack += [(v, d + 1) for v in x]
    return deepest


def _num(v: Any, what: str) -> int:
    if isinstance(v, bool):
        raise UsageError(f"{what}: expected a number, got {v!r}")
    if isinstance(v, int):
        n = v
    elif isinstance(v, str):
        try:
            n = int(v.strip().replace("_", ""), 0)
        except ValueError:
            raise UsageError(f"{what}: {v!r} is not a number (hex strings need 0x)") from None
    else:
        raise UsageError(f"{what}: expected a number or hex string, got {type(v).__name__}")
    if n < 0 or n >= 1 << 64:
        raise UsageError(f"{what}: {v!r} out of range")
    return n


@dataclass
class Registers:
    """One SMMU's register values as given; ``None`` where nobody said."""

    name: str = "smmu0"
    base: int | None = None
    values: dict[str, int] = field(default_factory=dict)
    coherent_override: bool | None = None
    coherent_source: str = ""
    origin: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, m: dict[str, Any], origin: str = "", index: int = 0) -> Registers:
        if not isinstance(m, dict):
            raise UsageError(f"{origin or 'registers'}: SMMU #{index} is not a JSON object")
        r = cls(origin=origin)
        for key, v in m.items():
            k = _ALIASES.get(str(key).lower(), str(key).lower())
            where = f"{origin or 'registers'}: {key}"
            if k in REGISTER_NAMES:
                n = _num(v, where)
                if n >> _REG_BITS[k]:
                    raise UsageError(f"{where}: {n:#x} does not fit a {_REG_BITS[k]}-bit register")
                r.values[k] = n
            elif k == "base":
                r.base = _num(v, where)
            elif k == "name":
                r.name = str(v)[:64]
            elif k == "coherent":
                if not isinstance(v, bool):
                    raise UsageError(f"{where}: expected true or false")
                r.coherent_override, r.coherent_source = v, f"{origin or 'registers'} (coherent={str(v).lower()})"
            elif k in METADATA_KEYS:
                r.extra[str(key)[:64]] = str(v)[:200]
            else:
                raise UsageError(_unknown_key(origin or "registers", str(key), index))
        if "name" not in {str(k).lower() for k in m}:
            r.name = f"smmu@{r.base:#x}" if r.base is not None else f"smmu{index}"
        return r

    @classmethod
    def from_page(cls, raw: bytes, origin: str) -> Registers:
        """Decode a raw MMIO page (page 0, 4 KiB or 64 KiB)."""
        if len(raw) < 0x100:
            raise UsageError(f"{origin}: register page of {len(raw)} bytes is too short (need page 0 of the SMMU)")
        r = cls(origin=origin, name="smmu0")
        for name, (off, size) in L.REGISTER_OFFSETS.items():
            r.values[name] = int.from_bytes(raw[off : off + size], "little")
        return r

    def merged(self, other: Registers) -> Registers:
        """``other``'s values override this one's (flags over files)."""
        out = Registers(self.name, self.base, dict(self.values), self.coherent_override, self.coherent_source, self.origin, dict(self.extra))
        out.values.update(other.values)
        if other.base is not None:
            out.base = other.base
        if other.coherent_override is not None:
            out.coherent_override, out.coherent_source = other.coherent_override, other.coherent_source
        return out

    # -- accessors ---------------------------------------------------------------------------
    def get(self, name: str) -> int | None:
        return self.values.get(name)

    def _f(self, reg: str, layout: L.Layout, fld: str) -> int | None:
        v = self.values.get(reg)
        return None if v is None else get(layout, v, fld)

    @property
    def sid_bits(self) -> int | None:
        return self._f("idr1", L.IDR1, "SIDSIZE")

    @property
    def ssid_bits(self) -> int | None:
        return self._f("idr1", L.IDR1, "SSIDSIZE")

    @property
    def asid_bits(self) -> int | None:
        v = self._f("idr0", L.IDR0, "ASID16")
        return None if v is None else (16 if v else 8)

    @property
    def vmid_bits(self) -> int | None:
        v = self._f("idr0", L.IDR0, "VMID16")
        return None if v is None else (16 if v else 8)

    @property
    def cd2l(self) -> bool | None:
        v = self._f("idr0", L.IDR0, "CD2L")
        return None if v is None else bool(v)

    @property
    def feat_2lvl(self) -> bool | None:
        """ARM_SMMU_FEAT_2_LVL_STRTAB: IDR0.ST_LEVEL == 1 and sid_bits > STRTAB_SPLIT (upstream hw_probe)."""
        st = self._f("idr0", L.IDR0, "ST_LEVEL")
        sb = self.sid_bits
        if st is not None and st != 1:
            return False
        if sb is not None and sb <= L.STRTAB_SPLIT:
            return False
        if st is None or sb is None:
            return None
        return True

    @property
    def cohacc(self) -> bool | None:
        v = self._f("idr0", L.IDR0, "COHACC")
        return None if v is None else bool(v)

    @property
    def coherent(self) -> bool | None:
        """ARM_SMMU_FEAT_COHERENCY: firmware's word (override) or, by default, IDR0.COHACC."""
        if self.coherent_override is not None:
            return self.coherent_override
        return self.cohacc

    @property
    def coherent_basis(self) -> str:
        if self.coherent_override is not None:
            return self.coherent_source
        if self.cohacc is None:
            return "unknown (no IDR0 and no --coherent/--no-coherent)"
        return "IDR0.COHACC (firmware's DT dma-coherent / IORT flag assumed to match; override with --coherent/--no-coherent)"

    def json(self) -> dict[str, Any]:
        """The register values used, echoed in the report."""
        out: dict[str, Any] = {"name": self.name, "base": None if self.base is None else f"{self.base:#x}"}
        for k in REGISTER_NAMES:
            if k in self.values:
                out[k] = f"{self.values[k]:#x}"
        out["coherent"] = self.coherent
        out["coherent_basis"] = self.coherent_basis
        if self.origin:
            out["origin"] = self.origin
        return out


def register_file(smmus: list[Registers], source: str) -> dict[str, Any]:
    """The register-file form (what ``--regs`` reads) of these register sets.

    >>> r = Registers.from_mapping({"strtab_base_cfg": 0x10210, "name": "smmu0"})
    >>> register_file([r], "test")
    {'smmus': [{'name': 'smmu0', 'strtab_base_cfg': '0x10210'}], 'source': 'test'}
    """
    out = []
    for r in smmus:
        m: dict[str, Any] = {"name": r.name}
        if r.base is not None:
            m["base"] = f"{r.base:#x}"
        m.update({k: f"{r.values[k]:#x}" for k in REGISTER_NAMES if k in r.values})
        if r.coherent_override is not None:
            m["coherent"] = r.coherent_override
        out.append(m)
    return {"smmus": out, "source": source}


def load_register_file(path: str) -> list[Registers]:
    """A JSON register file (flat object or ``{"smmus": [...]}``) or a raw MMIO page."""
    try:
        with open_regular(path) as f:
            raw = f.read(1 << 20)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read register file: {exc.strerror}") from None
    if raw[:1] in (b"{", b"[", b" ", b"\n", b"\t", b"\r"):
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not valid JSON: {exc}") from None
        except RecursionError:
            raise UsageError(f"{path}: JSON nested too deeply") from None
        if _depth(doc) >= MAX_JSON_DEPTH:
            raise UsageError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} deep: not a register file")
        if isinstance(doc, dict) and "smmus" in doc:
            extra = sorted(str(k) for k in doc if k != "smmus" and k not in METADATA_KEYS)
            if extra:
                raise UsageError(f"{path}: unknown top-level key {extra[0]!r} beside 'smmus'")
            smmus = doc["smmus"]
            if not isinstance(smmus, list) or not smmus:
                raise UsageError(f"{path}: 'smmus' must be a non-empty list")
            return [Registers.from_mapping(m, path, i) for i, m in enumerate(smmus)]
        if isinstance(doc, dict):
            return [Registers.from_mapping(doc, path)]
        raise UsageError(f"{path}: expected a JSON object")
    if len(raw) in (4096, 65536, 0x20000):
        return [Registers.from_page(raw, path)]
    raise UsageError(f"{path}: neither a JSON register file nor a 4 KiB/64 KiB raw register page")


def find_sidecar(dump_spec: str) -> str | None:
    """``DUMP.smmu.json`` beside the (first) dump file, if it exists."""
    first = dump_spec.split(",")[0]
    path = first.rpartition("@")[0] if "@" in first and not os.path.exists(first) else first
    for cand in (path + ".smmu.json", os.path.splitext(path)[0] + ".smmu.json"):
        if os.path.isfile(cand):
            return cand
    return None

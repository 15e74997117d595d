"""Kernel symbols, when the dump or the user has them: ``System.map``, a ``vmlinux``'s symbol
table, or the kernel's own kallsyms tables located by VMCOREINFO (Linux 6.0+ exports them).

Link-time addresses (System.map, vmlinux) are moved by VMCOREINFO's ``KERNELOFFSET`` (KASLR), as
crash and makedumpfile do.  kallsyms (kernel/kallsyms.c, 6.0-6.12): ``kallsyms_names`` is, per
symbol, a length byte (two bytes when its top bit is set, "kallsyms: support big kernel symbols",
6.1) and that many token indexes; ``kallsyms_token_index[256]`` (u16) points into
``kallsyms_token_table`` (NUL-terminated tokens); the expanded name starts with its type letter;
addresses are ``kallsyms_relative_base + (u32)kallsyms_offsets[i]`` (CONFIG_KALLSYMS_BASE_RELATIVE,
always on arm64).  Whether data symbols (``iommu_device_list``) are there depends on
CONFIG_KALLSYMS_ALL (Debian 6.1: off; 6.12: on).  Everything is bounded: MAX_SYMS symbols,
MAX_MAP bytes of map file.

>>> s = Symbols.from_system_map_text("ffff800008010000 T _stext\\nffff80000a5f1e50 d iommu_device_list\\n", 0x1000)
>>> hex(s["iommu_device_list"]), s.get("nope")
('0xffff80000a5f2e50', None)
"""

from __future__ import annotations

import re
import struct

from smmu_forensics.discover.kva import KernelVA, TranslationError
from smmu_forensics.dumps.base import MemoryMissing, PhysicalMemory
from smmu_forensics.dumps.source import open_regular

__all__ = ["Symbols", "SymbolError", "kernel_offset"]

MAX_SYMS = 1 << 21
MAX_MAP = 256 << 20
MAP_LINE = re.compile(rb"^([0-9a-fA-F]{8,16}) ([A-Za-z]) (\S+)", re.M)


class SymbolError(ValueError):
    """Symbols could not be read (one line: why)."""


def kernel_offset(info: dict[str, str]) -> int:
    """VMCOREINFO's KERNELOFFSET (the KASLR displacement), 0 when absent."""
    try:
        return int(info.get("KERNELOFFSET", "0"), 16)
    except ValueError:
        raise SymbolError(f"VMCOREINFO KERNELOFFSET={info['KERNELOFFSET']!r} is not a number") from None


class Symbols:
    """Name -> runtime address."""

    def __init__(self, addrs: dict[str, int], source: str) -> None:
        self.addrs, self.source = addrs, source

    def __getitem__(self, name: str) -> int:
        return self.addrs[name]

    def get(self, name: str) -> int | None:
        return self.addrs.get(name)

    @classmethod
    def from_system_map_text(cls, text: bytes | str, offset: int = 0, source: str = "System.map") -> Symbols:
        raw = text.encode() if isinstance(text, str) else text
        out = {m[3].decode("ascii", "replace"): (int(m[1], 16) + offset) & ((1 << 64) - 1) for m in MAP_LINE.finditer(raw[:MAX_MAP])}
        if not out:
            raise SymbolError(f"{source}: no 'address type name' lines")
        return cls(out, source)

    @classmethod
    def from_file(cls, path: str, offset: int) -> Symbols:
        """A System.map or a vmlinux (ELF), moved by ``offset``."""
        try:
            with open_regular(path) as f:
                head = f.read(4)
                if head == b"\x7fELF":
                    return cls._from_vmlinux(f, offset, path)
                f.seek(0)
                return cls.from_system_map_text(f.read(MAX_MAP), offset, path)
        except OSError as exc:
            raise SymbolError(f"{path}: {exc.strerror}") from None

    @classmethod
    def _from_vmlinux(cls, f, offset: int, path: str) -> Symbols:  # type: ignore[no-untyped-def]
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        try:
            tab = ELFFile(f).get_section_by_name(".symtab")
            if not isinstance(tab, SymbolTableSection):
                raise SymbolError(f"{path}: a vmlinux without a symbol table (stripped)")
            out = {}
            for i, s in enumerate(tab.iter_symbols()):
                if i >= MAX_SYMS:
                    break
                if s.name and s["st_value"]:
                    out[s.name] = (s["st_value"] + offset) & ((1 << 64) - 1)
        except (ELFError, ValueError, struct.error) as exc:
            raise SymbolError(f"{path}: not a readable vmlinux ({exc})") from None
        return cls(out, path)

    @classmethod
    def from_kallsyms(cls, mem: PhysicalMemory, wanted: set[str] | None = None) -> Symbols:
        """The kernel's kallsyms tables (VMCOREINFO SYMBOL(kallsyms_*)); ``wanted`` stops early."""
        info = mem.vmcoreinfo()
        try:
            kva = KernelVA.from_vmcoreinfo(info)
            at = {k: kva.pa(int(info[f"SYMBOL(kallsyms_{k})"], 16))
                  for k in ("names", "num_syms", "token_table", "token_index", "offsets", "relative_base")}
            n = int.from_bytes(mem.read(at["num_syms"], 4), "little")
            if not 0 < n <= MAX_SYMS:
                raise SymbolError(f"kallsyms claims {n} symbols")
            base = int.from_bytes(mem.read(at["relative_base"], 8), "little")
            index = struct.unpack("<256H", mem.read(at["token_index"], 512))
            table = mem.read(at["token_table"], max(index) + 256)
            offsets = mem.read_partial(at["offsets"], 4 * n).data
            names = mem.read_partial(at["names"], min(64 * n, 64 << 20)).data
        except KeyError as exc:
            raise SymbolError(f"VMCOREINFO lacks {exc.args[0]} (kallsyms is exported from Linux 6.0)") from None
        except (TranslationError, MemoryMissing, ValueError, struct.error) as exc:
            raise SymbolError(f"kallsyms not readable: {exc}") from None
        tokens = [table[o : table.find(b"\0", o)].decode("ascii", "replace") if table.find(b"\0", o) >= 0 else "" for o in index]
        out: dict[str, int] = {}
        pos = 0
        for i in range(n):
            if pos >= len(names) or 4 * i + 4 > len(offsets):
                break
            ln = names[pos]
            pos += 1
            if ln & 0x80:
                ln = (ln & 0x7F) | names[pos] << 7 if pos < len(names) else 0
                pos += 1
            name = "".join(tokens[t] for t in names[pos : pos + ln])[1:]
            pos += ln
            out[name] = (base + struct.unpack_from("<I", offsets, 4 * i)[0]) & ((1 << 64) - 1)
            if wanted is not None and wanted <= out.keys():
                break
        if not out:
            raise SymbolError("kallsyms: no symbol decoded")
        return cls(out, f"kallsyms ({len(out)} of {n} symbols read)")

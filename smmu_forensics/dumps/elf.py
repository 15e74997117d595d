"""ELF cores: the kernel's /proc/vmcore, ``makedumpfile -E``, QEMU ``dump-guest-memory``.

Physical addresses come from ``p_paddr`` (``p_vaddr`` is a kernel VA in a vmcore).  Bytes past
``p_filesz`` are excluded (makedumpfile -E marks filtered runs that way); the kernel-text
PT_LOAD that overlaps RAM is resolved by :mod:`.segments`.  QEMU 7.2's quirks (program headers
at e_phoff 192, e_ehsize 8) are accepted: e_ehsize is not validated.  The ELF header is parsed by pyelftools; the program header table is decoded in one numpy
call through a dtype read off pyelftools' ``Elf_Phdr`` (:func:`.structs.phdr_dtype`).
"""

from __future__ import annotations

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from smmu_forensics.dumps.base import VMCOREINFO_HIGHLIGHTS, DumpInfo, parse_vmcoreinfo
from smmu_forensics.dumps.segments import Segment, SegmentMemory
from smmu_forensics.dumps.source import ByteSource
from smmu_forensics.dumps.structs import phdr_dtype
from smmu_forensics.errors import DumpError

ELF_MAGIC = b"\x7fELF"
#: makedumpfile sets e_flags bit 0 when it hit ENOSPC (makedumpfile.c check_and_modify_elf_headers)
DUMP_ELF_INCOMPLETE = 0x1
#: notes larger than this are not parsed (a VMCOREINFO blob is at most one page)
MAX_NOTES_BYTES = 64 << 20
MAX_PHDRS = 1 << 17  # vmcores carry one PT_LOAD per RAM range and one PT_NOTE per CPU: thousands


class ElfMemory(SegmentMemory):
    """An ELF core's PT_LOAD segments as physical memory."""

    def __init__(self, src: ByteSource, label: str = "elf") -> None:
        try:
            elf = ELFFile(src.fileobj())  # type: ignore[arg-type]
            hdr = elf.header
            if hdr["e_type"] != "ET_CORE":
                raise DumpError(src.name, f"ELF file of type {hdr['e_type']}, not a core dump (ET_CORE)")
            if hdr["e_phnum"] == 0xFFFF and (hdr["e_shoff"] == 0 or hdr["e_shnum"] == 0):
                raise DumpError(src.name, "e_phnum is PN_XNUM (0xffff) but there is no section header 0 with the real count")
            nseg = elf.num_segments()
            if nseg > MAX_PHDRS:
                raise DumpError(src.name, f"ELF header claims {nseg} program headers (limit {MAX_PHDRS})")
            end_ph = hdr["e_phoff"] + nseg * hdr["e_phentsize"]
            if end_ph > src.size:
                raise DumpError(src.name, f"program headers end at {end_ph:#x}, past the end of the file: truncated")
            segs: list[Segment] = []
            note_blobs: list[bytes] = []
            self.notes_seen: list[str] = []
            little = hdr["e_ident"]["EI_DATA"] == "ELFDATA2LSB"
            self.elf_class = 64 if hdr["e_ident"]["EI_CLASS"] == "ELFCLASS64" else 32
            dt, pt = phdr_dtype(self.elf_class, little)
            step = hdr["e_phentsize"]
            if nseg and step < dt.itemsize:
                raise DumpError(src.name, f"e_phentsize {step} is smaller than a program header ({dt.itemsize} bytes)")
            raw = np.frombuffer(src.pread(hdr["e_phoff"], nseg * step), dtype=np.uint8)
            if len(raw) < nseg * step:
                raise DumpError(src.name, "program headers cut short: truncated")
            ph = raw.reshape(nseg, step)[:, : dt.itemsize].copy().view(dt).reshape(nseg)  # one call for 131,072
            kinds = ph["p_type"]
            load = ph[kinds == pt["PT_LOAD"]]
            keep = load["p_memsz"] != 0
            if dt["p_paddr"].itemsize == 8:
                keep &= load["p_paddr"] != np.uint64((1 << 64) - 1)  # "no physical address" (kcore, some vmcores)
            if label == "kcore":
                keep &= ~((load["p_paddr"] == 0) & (load["p_vaddr"] != 0))
            for paddr, memsz, off, filesz in zip(*(load[keep][f].tolist() for f in ("p_paddr", "p_memsz", "p_offset", "p_filesz"))):
                segs.append(Segment(paddr, memsz, off, min(filesz, memsz)))
            notes_budget = MAX_NOTES_BYTES
            for off, filesz in zip(*(ph[kinds == pt["PT_NOTE"]][f].tolist() for f in ("p_offset", "p_filesz"))):
                size = min(filesz, notes_budget)  # all notes together: at most MAX_NOTES_BYTES read
                if size > 0:
                    note_blobs.append(src.pread(off, size))
                    notes_budget -= size
            self.phdr_table = ph
            self.pt_load = pt["PT_LOAD"]
            self.little_endian = little
            self.machine = str(hdr["e_machine"])
            self.e_flags = hdr["e_flags"]
        except DumpError:
            raise
        except (ELFError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise DumpError(src.name, f"malformed ELF core: {exc}") from None
        except Exception as exc:  # construct's StreamError & co from pyelftools on truncated input
            raise DumpError(src.name, f"malformed ELF core: {type(exc).__name__}: {exc}") from None
        if not segs:
            raise DumpError(src.name, "ELF core has no PT_LOAD segment with a physical address: no memory to read")
        super().__init__(src, segs, page_size=4096)
        self.format_name = f"elf{self.elf_class}"
        self._notes = [n for blob in note_blobs for n in _iter_notes(blob, self.little_endian)]
        self.notes_seen = [f"{name}/{ntype}" for name, ntype, _ in self._notes]
        vmci = [desc for name, _, desc in self._notes if name == "VMCOREINFO"]
        self._vmcoreinfo = parse_vmcoreinfo(vmci[0]) if vmci else {}
        self.producer = _guess_producer(self)

    def vmcoreinfo(self) -> dict[str, str]:
        return self._vmcoreinfo

    def info(self) -> DumpInfo:
        inf = self._base_info(self.format_name)
        if self.e_flags & DUMP_ELF_INCOMPLETE:
            inf.incomplete = True
            inf.incomplete_reasons.append("ELF e_flags has makedumpfile's DUMP_ELF_INCOMPLETE bit (0x1)")
        counts: dict[str, int] = {}
        for name, ntype, _ in self._notes:
            key = f"{name}/{ntype}"
            counts[key] = counts.get(key, 0) + 1
        inf.notes = [f"{k} x{v}" for k, v in counts.items()]
        inf.details = {
            "machine": self.machine,
            "elf_class": self.elf_class,
            "producer": self.producer,
            "pt_load": int((self.phdr_table["p_type"] == self.pt_load).sum()),
            "vmcoreinfo_keys": [k for k in VMCOREINFO_HIGHLIGHTS if k in self._vmcoreinfo],
        }
        return inf


def _iter_notes(blob: bytes, little: bool) -> list[tuple[str, int, bytes]]:
    """ELF notes of one PT_NOTE segment: (name, type, desc); stops quietly at garbage."""
    import struct

    fmt = "<III" if little else ">III"
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while pos + 12 <= len(blob) and len(out) < 100000:
        namesz, descsz, ntype = struct.unpack_from(fmt, blob, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break
        pos += 12
        name_end = pos + namesz
        desc_start = pos + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if desc_end > len(blob):
            break
        name = blob[pos:name_end].rstrip(b"\0").decode("ascii", errors="replace")
        out.append((name, ntype, blob[desc_start:desc_end]))
        pos = desc_start + ((descsz + 3) & ~3)
    return out


def _guess_producer(m: ElfMemory) -> str:
    loads = m.phdr_table[m.phdr_table["p_type"] == m.pt_load]
    if len(loads) and bool((loads["p_vaddr"] == loads["p_paddr"]).all()):
        return "QEMU dump-guest-memory (p_vaddr == p_paddr)"
    if bool((loads["p_filesz"] < loads["p_memsz"]).any()):
        return "makedumpfile -E (filtered segments)"
    return "kernel /proc/vmcore or a copy"

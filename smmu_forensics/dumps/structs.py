"""Every dump-format layout the project reads or writes, declared once (pyelftools' style).

Readers parse with these declarations, synth's writers build with them; hot paths use the
``struct`` formats and numpy dtypes *derived* from them (:func:`struct_format`, :func:`dtype`), so
a layout is never retyped.  ELF itself is pyelftools' (:func:`elf_structs`), for reading and
writing alike.  Sources: makedumpfile ``diskdump_mod.h`` (kdump-compressed), ``makedumpfile.h``
(flattened: ``struct makedumpfile_header``, ``struct makedumpfile_data_header``), LiME's
``lime.h`` (``lime_mem_range_header``); offsets re-derived in ../shared/reference/dump-formats.md.

>>> FlatHeader.build({"type": 1, "version": 1})[:12]
b'makedumpfile'
>>> struct_format(PageDesc), dtype(PageDesc).itemsize
('<QLLQ', 24)
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import numpy as np
from construct import Bytes, Const, FormatField, Int32sl, Int32ul, Int64sb, Int64sl, Int64ul, Padding, Struct

__all__ = ["KDUMP_SIGNATURES", "DiskDumpHeader64", "KdumpSubHeader64", "PageDesc", "FLAT_SIGNATURE", "FlatHeader",
           "FlatRecord", "LIME_MAGIC", "LimeHeader", "struct_format", "dtype", "compiled", "elf_structs", "phdr_dtype"]

# -- kdump-compressed (diskdump_mod.h) ------------------------------------------------------------
KDUMP_SIGNATURES = (b"KDUMP   ", b"DISKDUMP")  # KDUMP_SIGNATURE, DISK_DUMP_SIGNATURE

DiskDumpHeader64 = Struct(
    "signature" / Bytes(8),
    "header_version" / Int32sl,
    "utsname" / Bytes(6 * 65),
    Padding(6),
    "tv_sec" / Int64sl,
    "tv_usec" / Int64sl,
    "status" / Int32ul,
    "block_size" / Int32sl,
    "sub_hdr_size" / Int32sl,
    "bitmap_blocks" / Int32ul,
    "max_mapnr" / Int32ul,
    "total_ram_blocks" / Int32ul,
    "device_blocks" / Int32ul,
    "written_blocks" / Int32ul,
    "current_cpu" / Int32ul,
    "nr_cpus" / Int32sl,
)
assert DiskDumpHeader64.sizeof() == 464

KdumpSubHeader64 = Struct(
    "phys_base" / Int64ul,
    "dump_level" / Int32sl,
    "split" / Int32sl,
    "start_pfn" / Int64ul,
    "end_pfn" / Int64ul,
    "offset_vmcoreinfo" / Int64ul,
    "size_vmcoreinfo" / Int64ul,
    "offset_note" / Int64ul,
    "size_note" / Int64ul,
    "offset_eraseinfo" / Int64ul,
    "size_eraseinfo" / Int64ul,
    "start_pfn_64" / Int64ul,
    "end_pfn_64" / Int64ul,
    "max_mapnr_64" / Int64ul,
)
assert KdumpSubHeader64.sizeof() == 104

PageDesc = Struct(  # page_desc_t
    "offset" / Int64ul,  # where the page's data starts in the file
    "size" / Int32ul,  # its stored (maybe compressed) size
    "flags" / Int32ul,  # DUMP_DH_COMPRESSED_*
    "page_flags" / Int64ul,
)

# -- flattened (makedumpfile -F; QEMU dump-guest-memory -z) -----------------------------------------
FLAT_SIGNATURE = b"makedumpfile"  # MAKEDUMPFILE_SIGNATURE
FlatHeader = Struct(  # struct makedumpfile_header, in a 4096-byte block (MAX_SIZE_MDF_HEADER)
    "signature" / Const(FLAT_SIGNATURE.ljust(16, b"\0")),
    "type" / Int64sb,  # TYPE_FLAT_HEADER 1
    "version" / Int64sb,  # VERSION_FLAT_HEADER 1
)
FlatRecord = Struct(  # struct makedumpfile_data_header; offset -1 ends the stream (END_FLAG_FLAT_HEADER)
    "offset" / Int64sb,
    "buf_size" / Int64sb,
)

# -- LiME ----------------------------------------------------------------------------------------------
LIME_MAGIC = 0x4C694D45  # "EMiL" little-endian
LimeHeader = Struct(  # lime_mem_range_header
    "magic" / Const(LIME_MAGIC, Int32ul),
    "version" / Int32ul,
    "s_addr" / Int64ul,
    "e_addr" / Int64ul,  # inclusive
    "reserved" / Bytes(8),
)

def struct_format(s: Struct) -> str:
    """The ``struct`` module's format of a Construct made of fixed-size integers and byte strings.

    >>> struct_format(FlatRecord), struct_format(LimeHeader)
    ('>qq', '<LLQQ8s')
    """
    order, codes = "", []
    for sc in s.subcons:
        inner = getattr(sc, "subcon", sc)
        inner = getattr(inner, "subcon", inner)  # through Renamed and Const
        if isinstance(inner, FormatField):
            order = order or inner.fmtstr[0]
            codes.append(inner.fmtstr[1:])
        else:
            codes.append(f"{inner.sizeof()}s")
    return order + "".join(codes)


def dtype(s: Struct) -> np.dtype:
    """A numpy dtype with the same fields, for arrays of records."""
    fmt = struct_format(s)
    order = "<" if fmt[0] == "<" else ">"
    names = [sc.name for sc in s.subcons]
    codes = {"Q": "u8", "q": "i8", "I": "u4", "L": "u4", "i": "i4", "l": "i4", "H": "u2"}
    return np.dtype([(n, order + codes[c]) for n, c in zip(names, fmt[1:])])


def compiled(s: Struct) -> struct.Struct:
    return struct.Struct(struct_format(s))


@functools.lru_cache(maxsize=4)
def phdr_dtype(elfclass: int = 64, little_endian: bool = True) -> tuple[np.dtype, dict[str, int]]:
    """pyelftools' ``Elf_Phdr`` as a numpy dtype (field order and widths read from its declaration),
    and its ``p_type`` names: a table of 131,072 program headers decodes in one call.

    >>> dt, pt = phdr_dtype()
    >>> dt.itemsize, dt.names[:3], pt["PT_LOAD"], pt["PT_NOTE"]
    (56, ('p_type', 'p_flags', 'p_offset'), 1, 4)
    """
    ph = elf_structs(elfclass, little_endian).Elf_Phdr
    fields, names = [], {}
    for sc in ph.subcons:
        packer = sc.packer if hasattr(sc, "packer") else sc.subcon.packer
        fmt = packer.format if isinstance(packer.format, str) else packer.format.decode()
        fields.append((sc.name, {"<": "<", ">": ">"}[fmt[0]] + {"L": "u4", "Q": "u8", "I": "u4"}[fmt[1]]))
        if hasattr(sc, "encoding"):
            names = {k: v for k, v in sc.encoding.items() if isinstance(k, str)}
    return np.dtype(fields), names


@functools.lru_cache(maxsize=4)
def elf_structs(elfclass: int = 64, little_endian: bool = True) -> Any:
    """pyelftools' ELF structures (Elf_Ehdr, Elf_Phdr, ...), used to write what pyelftools reads."""
    from elftools.elf.structs import ELFStructs

    st = ELFStructs(little_endian=little_endian, elfclass=elfclass)
    st.create_basic_structs()
    st.create_advanced_structs(e_type="ET_CORE", e_machine="EM_AARCH64", e_ident_osabi="ELFOSABI_SYSV")
    return st

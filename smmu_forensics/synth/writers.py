"""Write a :class:`MemoryImage` in every format the reader supports.

* ``elf``: ELF64 ET_CORE for EM_AARCH64 with a VMCOREINFO note; excluded pages end a PT_LOAD's
  file data (p_filesz < p_memsz), as ``makedumpfile -E`` does.
* ``kdump-{zlib,lzo,snappy,zstd,none}``: makedumpfile's kdump-compressed layout, header version 6,
  both bitmaps, page descriptors, the shared zero page when the dump level has bit 1.  Header
  structures are built from the same Construct schemas the reader parses with.
* ``flat-*``: the same, in makedumpfile's flattened format (records out of order, the header
  rewritten last, as makedumpfile does).
* ``lime``: LiME's ``lime`` mode; ``raw``: one flat file from the lowest RAM address.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable
from typing import BinaryIO

from smmu_forensics.dumps import codecs as C
from smmu_forensics.dumps.flattened import FLAT_HEADER_SIZE
from smmu_forensics.dumps.kdump import PAGE_DESC
from smmu_forensics.dumps.structs import (
    KDUMP_SIGNATURES,
    DiskDumpHeader64,
    FlatHeader,
    FlatRecord,
    KdumpSubHeader64,
    LimeHeader,
    elf_structs,
)
from smmu_forensics.synth.image import MemoryImage

FORMATS = ("elf", "raw", "lime", "kdump-zlib", "kdump-lzo", "kdump-snappy", "kdump-zstd", "kdump-none",
           "flat-zlib", "flat-lzo", "flat-snappy", "flat-zstd", "flat-none", "flat-elf")

def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    from elftools.construct import Container

    n = name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return elf_structs().Elf_Nhdr.build(Container(n_namesz=len(n), n_descsz=len(desc), n_type=ntype)) + pad(n) + pad(desc)


#: the keys an arm64 kernel writes that readers such as drgn insist on (values are plausible, not real)
DEFAULT_VMCOREINFO = {
    "OSRELEASE": "6.1.0-synth",
    "SYMBOL(swapper_pg_dir)": "ffff800009d58000",
    "SYMBOL(_stext)": "ffff800008010000",
    "NUMBER(VA_BITS)": "48",
    "NUMBER(kimage_voffset)": "0xffff7fffc7e00000",
    "NUMBER(TCR_EL1_T1SZ)": "0x10",
    "NUMBER(KERNELPACMASK)": "0x0",
    "KERNELOFFSET": "0",
}


def vmcoreinfo_blob(img: MemoryImage) -> bytes:
    phys = min((s for s, _ in img.ram), default=0)
    info = {**DEFAULT_VMCOREINFO, "PAGESIZE": str(img.page_size), "NUMBER(PHYS_OFFSET)": hex(phys), **img.vmcoreinfo}
    return "".join(f"{k}={v}\n" for k, v in info.items()).encode()


def _elf_runs(img: MemoryImage) -> list[tuple[int, int, int]]:
    """(paddr, memsz, filesz) segments: included pages then excluded pages per segment."""
    ps = img.page_size
    segs: list[tuple[int, int, int]] = []
    for start, size in sorted(img.ram):
        pfn, end = start // ps, (start + size) // ps
        while pfn < end:
            a = pfn
            while pfn < end and not img.is_excluded(pfn):
                pfn += 1
            inc = pfn - a
            while pfn < end and img.is_excluded(pfn):
                pfn += 1
            segs.append((a * ps, (pfn - a) * ps, inc * ps))
    return segs


def write_elf(img: MemoryImage, path: str, with_vmcoreinfo: bool = True) -> None:
    ps = img.page_size
    # one CORE/NT_PRSTATUS (arm64 struct elf_prstatus is 392 bytes), as every vmcore has one per CPU
    notes = _note(b"CORE", 1, bytes(392))
    if with_vmcoreinfo:
        notes += _note(b"VMCOREINFO", 0, vmcoreinfo_blob(img))
    segs = _elf_runs(img)
    phnum = 1 + len(segs)
    phoff = 64
    note_off = phoff + 56 * phnum
    data_off = -(-(note_off + len(notes)) // ps) * ps
    from elftools.construct import Container as C

    st = elf_structs()
    phdr = lambda typ, flags, off, paddr, filesz, memsz, align: st.Elf_Phdr.build(C(  # noqa: E731
        p_type=typ, p_flags=flags, p_offset=off, p_vaddr=paddr, p_paddr=paddr, p_filesz=filesz, p_memsz=memsz, p_align=align))
    with open(path, "wb") as f:
        ident = C(EI_MAG=list(b"\x7fELF"), EI_CLASS="ELFCLASS64", EI_DATA="ELFDATA2LSB", EI_VERSION="EV_CURRENT",
                  EI_OSABI="ELFOSABI_SYSV", EI_ABIVERSION=0)
        f.write(st.Elf_Ehdr.build(C(e_ident=ident, e_type="ET_CORE", e_machine="EM_AARCH64", e_version="EV_CURRENT", e_entry=0,
                                    e_phoff=phoff, e_shoff=0, e_flags=0, e_ehsize=st.Elf_Ehdr.sizeof(),
                                    e_phentsize=st.Elf_Phdr.sizeof(), e_phnum=phnum, e_shentsize=64, e_shnum=0, e_shstrndx=0)))
        f.write(phdr("PT_NOTE", 0, note_off, 0, len(notes), len(notes), 0))
        off = data_off
        places = []
        for paddr, memsz, filesz in segs:
            f.write(phdr("PT_LOAD", 7, off if filesz else 0, paddr, filesz, memsz, ps))
            places.append((paddr, filesz, off))
            off += filesz
        f.write(notes)
        for paddr, filesz, foff in places:
            for pfn in range(paddr // ps, (paddr + filesz) // ps):
                if pfn in img.pages:
                    f.seek(foff + pfn * ps - paddr)
                    f.write(img.pages[pfn])
        f.truncate(off)


def write_raw(img: MemoryImage, path: str) -> int:
    """One file from the lowest RAM address to the highest; returns the base address."""
    lo = min(s for s, _ in img.ram)
    hi = max(s + n for s, n in img.ram)
    ps = img.page_size
    with open(path, "wb") as f:
        for pfn, page in sorted(img.pages.items()):
            a = pfn * ps
            if lo <= a < hi and img.in_ram(a, ps):
                f.seek(a - lo)
                f.write(page)
        f.truncate(hi - lo)
    return lo


def write_lime(img: MemoryImage, path: str) -> None:
    ps = img.page_size
    with open(path, "wb") as f:
        for start, size in sorted(img.ram):
            f.write(LimeHeader.build({"version": 1, "s_addr": start, "e_addr": start + size - 1, "reserved": bytes(8)}))
            base = f.tell()
            for pfn in range(start // ps, (start + size) // ps):
                if pfn in img.pages:
                    f.seek(base + pfn * ps - start)
                    f.write(img.pages[pfn])
            f.seek(base + size)
            f.truncate(base + size)


def _compressor(codec: str, level: int | None = None) -> tuple[int, Callable[[bytes], bytes]]:
    if codec == "zlib":
        return C.DUMP_DH_COMPRESSED_ZLIB, lambda b: zlib.compress(b, 1)  # makedumpfile: Z_BEST_SPEED
    if codec == "lzo":
        import lzallright

        c = lzallright.LZOCompressor()
        return C.DUMP_DH_COMPRESSED_LZO, lambda b: bytes(c.compress(b))
    if codec == "snappy":
        import cramjam

        return C.DUMP_DH_COMPRESSED_SNAPPY, lambda b: bytes(cramjam.snappy.compress_raw(b))
    if codec == "zstd":
        import zstandard

        z = zstandard.ZstdCompressor(level=1)
        return C.DUMP_DH_COMPRESSED_ZSTD, z.compress
    return 0, lambda b: b


def write_kdump(img: MemoryImage, path: str, codec: str = "zlib", dump_level: int = 1) -> None:
    """makedumpfile's kdump-compressed layout (see :mod:`smmu_forensics.dumps.kdump`), header version 6."""
    ps = img.page_size
    flag, compress = _compressor(codec)
    max_mapnr = img.max_pfn
    bm_bytes = -(-max_mapnr // 8)  # one bit per PFN
    half = -(-bm_bytes // ps) * ps  # each bitmap fills whole blocks
    bm1, bm2 = bytearray(half), bytearray(half)
    dumped = []
    for pfn in img.ram_pfns():
        bm1[pfn >> 3] |= 1 << (pfn & 7)
        if not img.is_excluded(pfn):
            bm2[pfn >> 3] |= 1 << (pfn & 7)
            dumped.append(pfn)
    head, sub_hdr_size = _kdump_headers(img, flag, dump_level, 2 * half // ps)
    pd_base = (1 + sub_hdr_size + 2 * half // ps) * ps
    with open(path, "wb") as f:
        f.write(head)
        f.seek((1 + sub_hdr_size) * ps)
        f.write(bm1)
        f.write(bm2)
        descs = _kdump_pages(f, img, dumped, pd_base + PAGE_DESC.size * len(dumped), flag, compress, dump_level)
        f.seek(pd_base)
        f.write(descs)


def _kdump_headers(img: MemoryImage, flag: int, dump_level: int, bitmap_blocks: int) -> tuple[bytes, int]:
    """disk_dump_header, then (from block 1) kdump_sub_header and the VMCOREINFO note; and sub_hdr_size."""
    ps, max_mapnr = img.page_size, img.max_pfn
    vmci = vmcoreinfo_blob(img)
    note = _note(b"VMCOREINFO", 0, vmci)
    sub_size = KdumpSubHeader64.sizeof()
    offset_note = ps + sub_size
    offset_vmci = offset_note + 12 + 12  # nhdr + "VMCOREINFO\0" padded to 12
    sub_hdr_size = -(-(sub_size + len(note)) // ps)
    uts = b"".join(s.ljust(65, b"\0") for s in (b"Linux", b"synth", img.vmcoreinfo.get("OSRELEASE", "6.1.0-synth").encode()[:64],
                                                  b"#1 SMP", b"aarch64", b"(none)"))
    hdr = DiskDumpHeader64.build(dict(
        signature=KDUMP_SIGNATURES[0], header_version=6, utsname=uts, tv_sec=0, tv_usec=0, status=flag, block_size=ps,
        sub_hdr_size=sub_hdr_size, bitmap_blocks=bitmap_blocks, max_mapnr=min(max_mapnr, 0xFFFFFFFF), total_ram_blocks=0,
        device_blocks=0, written_blocks=0, current_cpu=0, nr_cpus=1))
    sub = KdumpSubHeader64.build(dict(
        phys_base=min((s for s, _ in img.ram), default=0), dump_level=dump_level, split=0, start_pfn=0, end_pfn=0,
        offset_vmcoreinfo=offset_vmci, size_vmcoreinfo=len(vmci), offset_note=offset_note, size_note=len(note),
        offset_eraseinfo=0, size_eraseinfo=0, start_pfn_64=0, end_pfn_64=max_mapnr, max_mapnr_64=max_mapnr))
    return hdr.ljust(ps, b"\0") + sub + note, sub_hdr_size


def _kdump_pages(f: BinaryIO, img: MemoryImage, dumped: list[int], data: int, flag: int, compress: Callable[[bytes], bytes],
                 dump_level: int) -> bytes:
    """Write the page data from file offset ``data``; return the page descriptors (page_desc_t) for them."""
    ps = img.page_size
    descs = bytearray()
    f.seek(data)
    zero_off = None
    if dump_level & 1:  # makedumpfile -d 1 stores one zero page that every zero page's descriptor shares
        zero_off = data
        f.write(bytes(ps))
        data += ps
    for pfn in dumped:
        page = img.pages.get(pfn)
        if page is None or not any(page):
            if zero_off is not None:
                descs += PAGE_DESC.pack(zero_off, ps, 0, 0)
                continue
            page = bytearray(ps)
        raw = bytes(page)
        comp = compress(raw)
        if flag and len(comp) < ps:
            descs += PAGE_DESC.pack(data, len(comp), flag, 0)
            f.write(comp)
            data += len(comp)
        else:
            descs += PAGE_DESC.pack(data, ps, 0, 0)
            f.write(raw)
            data += ps
    return bytes(descs)


def _rec(offset: int, size: int) -> bytes:
    return FlatRecord.build({"offset": offset, "buf_size": size})


def flatten(src_path: str, dst_path: str, chunk: int = 1 << 16) -> None:
    """makedumpfile -F layout of an existing file: records out of order, header written last."""
    size = os.path.getsize(src_path)
    with open(src_path, "rb") as fin, open(dst_path, "wb") as f:
        f.write(FlatHeader.build({"type": 1, "version": 1}).ljust(FLAT_HEADER_SIZE, b"\0"))
        head = fin.read(min(chunk, size))
        f.write(_rec(0, len(head)) + b"\0" * len(head))  # placeholder header, overwritten below
        pos = len(head)
        while pos < size:
            buf = fin.read(min(chunk, size - pos))
            f.write(_rec(pos, len(buf)) + buf)  # zeros too, as makedumpfile writes them: a gap means a lost record
            pos += len(buf)
        f.write(_rec(0, len(head)) + head)
        f.write(_rec(-1, -1))


def write(img: MemoryImage, path: str, fmt: str, dump_level: int = 1) -> dict[str, object]:
    """Write ``img`` as ``fmt``; returns extra sidecar facts (``raw_base`` for raw dumps)."""
    if fmt == "elf":
        write_elf(img, path)
    elif fmt == "raw":
        return {"raw_base": hex(write_raw(img, path))}
    elif fmt == "lime":
        write_lime(img, path)
    elif fmt.startswith("kdump-"):
        write_kdump(img, path, fmt.split("-", 1)[1], dump_level)
    elif fmt.startswith("flat-"):
        inner = fmt.split("-", 1)[1]
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)) or ".", suffix=".tmp")
        os.close(fd)
        try:
            if inner == "elf":
                write_elf(img, tmp)
            else:
                write_kdump(img, tmp, inner, dump_level)
            flatten(tmp, path)
        finally:
            os.unlink(tmp)
    else:
        raise ValueError(f"unknown output format {fmt!r}; one of {', '.join(FORMATS)}")
    return {}

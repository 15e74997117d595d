"""Open a dump: pick the layer from the file's first bytes, never from its name.

``open_dump("vmcore")`` returns a :class:`PhysicalMemory`.  A spec may be:

* ``PATH`` - ELF core, kdump-compressed, flattened (of either), LiME; or a whole-file
  ``.gz``/``.xz``/``.zst``/``.bz2`` around any of these (unpacked once into the cache, dumps/unpack.py);
* ``PATH@BASE`` or ``raw_base=BASE`` - a raw physical dump starting at BASE;
* ``PART1,PART2,...`` - the files of a ``makedumpfile --split`` dump, or several raw files.

Example::

    >>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
    ...     mem.format_name, mem.page_size
    ('elf64', 4096)
"""

from __future__ import annotations

import os
from collections.abc import Callable

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.dumps.elf import ELF_MAGIC, ElfMemory
from smmu_forensics.dumps.flattened import FlatSource, is_flattened
from smmu_forensics.dumps.kdump import KdumpMemory, is_kdump
from smmu_forensics.dumps.lime import LimeMemory, is_lime
from smmu_forensics.dumps.raw import RawMemory
from smmu_forensics.dumps.source import ByteSource, FileSource
from smmu_forensics.dumps.unpack import unpack
from smmu_forensics.errors import DumpError, UnknownFormat, UsageError

Progress = Callable[[str, int, int], None]

#: whole-file wrappers: magic -> (name, how to unpack by hand)
WRAPPERS = {
    b"\x1f\x8b": ("gzip", "gzip -dk FILE"),
    b"\xfd7zXZ\x00": ("xz", "xz -dk FILE"),
    b"\x28\xb5\x2f\xfd": ("zstd", "zstd -d --long=31 FILE"),
    b"BZh": ("bzip2", "bunzip2 -k FILE"),
    b"\x04\x22\x4d\x18": ("lz4", "lz4 -d FILE"),
}


def parse_int(text: str, what: str) -> int:
    try:
        v = int(text.replace("_", ""), 0)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number (use 0x... for hex)") from None
    if v < 0 or v >= 1 << 64:
        raise UsageError(f"{what} {text!r} is out of range")
    return v


def _wrapper(head: bytes) -> tuple[str, str] | None:
    for magic, w in WRAPPERS.items():
        if head.startswith(magic):
            return w
    return None




def _layer_for(src: ByteSource, progress: Progress | None, depth: int = 0) -> PhysicalMemory:
    head = src.pread(0, 64)
    if len(head) == 0:
        raise DumpError(src.name, "empty file")
    if head.startswith(ELF_MAGIC):
        return ElfMemory(src)
    if is_kdump(head):
        return KdumpMemory([src])
    if is_flattened(head) and depth == 0 and isinstance(src, FileSource):
        cb = (lambda d, t: progress("indexing flattened file", d, t)) if progress else None
        flat = FlatSource(src, cb)
        try:
            inner = _layer_for(flat, progress, depth + 1)
        except DumpError as exc:
            if flat.truncated:
                raise DumpError(src.name, f"flattened stream ends early ({flat.records} records, no end marker) "
                                          f"and what it holds is unreadable: {exc.problem}") from None
            raise
        if isinstance(inner, KdumpMemory):
            inner.flattened = True
            inner.format_name = "flattened+kdump"
        else:
            inner.format_name = "flattened+" + inner.format_name
        return inner
    if is_lime(head):
        return LimeMemory(src)
    w = _wrapper(head)
    if w is not None:
        raise DumpError(src.name, f"{w[0]}-compressed file inside another container; unpack it with: {w[1]}")
    raise UnknownFormat(
        src.name,
        "unknown dump format (not ELF, kdump-compressed, flattened or LiME); "
        "for a raw physical dump give its base address as PATH@BASE or --raw-base",
    )


def open_dump(spec: str, raw_base: int | None = None, progress: Progress | None = None) -> PhysicalMemory:
    """Open a dump spec (see module docstring) read-only and return its physical memory."""
    parts = [p for p in spec.split(",") if p] if "," in spec and not os.path.exists(spec) else [spec]
    if not parts:
        raise UsageError("no dump given")
    raw: list[tuple[ByteSource, int]] = []
    plain: list[str] = []
    for p in parts:
        if "@" in p and not os.path.exists(p):
            path, _, base = p.rpartition("@")
            raw.append((_open_file(path, progress), parse_int(base, "raw base address")))
        elif raw_base is not None:
            raw.append((_open_file(p, progress), raw_base))
        else:
            plain.append(p)
    if raw and plain:
        raise UsageError("mix of raw PATH@BASE files and other dumps: give one dump at a time")
    if raw:
        return RawMemory(raw)
    srcs = [_open_file(p, progress) for p in plain]
    if len(srcs) == 1:
        try:
            return _layer_for(srcs[0], progress)
        except Exception:
            srcs[0].close()
            raise
    # several files: parts of a split kdump (each plain or flattened)
    sources: list[ByteSource] = []
    for s in srcs:
        head = s.pread(0, 64)
        if is_flattened(head):
            assert isinstance(s, FileSource)
            sources.append(FlatSource(s))
        elif is_kdump(head):
            sources.append(s)
        else:
            raise DumpError(s.name, "several files given, but this one is not a kdump-compressed split part")
    return KdumpMemory(sources, flattened=any(isinstance(s, FlatSource) for s in sources))


def _open_file(path: str, progress: Progress | None) -> FileSource:
    if not os.path.exists(path):
        raise DumpError(path, "no such file")
    if os.path.isdir(path):
        raise DumpError(path, "is a directory, not a dump file")
    src = FileSource(path)
    w = _wrapper(src.pread(0, 8))
    if w is None:
        return src
    src.close()
    kind, hint = w
    if kind == "lz4":
        raise DumpError(path, f"lz4-compressed file: unpack it first with: {hint}")
    return unpack(path, kind, progress)

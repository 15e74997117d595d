"""Open a dump: pick the layer from the file's first bytes, never from its name.

``open_dump("vmcore")`` returns a :class:`PhysicalMemory`.  A spec may be:

* ``PATH`` - ELF core, kdump-compressed, flattened (of either), LiME; or a whole-file
  ``.gz``/``.xz``/``.zst``/``.bz2`` around any of these (unpacked to a temporary file);
* ``PATH@BASE`` or ``raw_base=BASE`` - a raw physical dump starting at BASE;
* ``PART1,PART2,...`` - the files of a ``makedumpfile --split`` dump, or several raw files.

Example::

    >>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
    ...     mem.format_name, mem.page_size
    ('elf64', 4096)
"""

from __future__ import annotations

import bz2
import lzma
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable

from smmu_forensics.dumps.base import PhysicalMemory
from smmu_forensics.dumps.elf import ELF_MAGIC, ElfMemory
from smmu_forensics.dumps.flattened import FlatSource, is_flattened
from smmu_forensics.dumps.kdump import KdumpMemory, is_kdump
from smmu_forensics.dumps.lime import LimeMemory, is_lime
from smmu_forensics.dumps.raw import RawMemory
from smmu_forensics.dumps.source import ByteSource, FileSource
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
#: largest file we unpack into the temporary folder (override: SMMU_FORENSICS_MAX_UNPACK bytes)
DEFAULT_MAX_UNPACK = 64 << 30


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


class _Unpacked(FileSource):
    """A temporary unpacked copy, deleted when closed; named after the file the user gave."""

    def __init__(self, tmp: str, original: str, kind: str) -> None:
        super().__init__(tmp)
        self.tmp = tmp
        self.name = f"{original} ({kind}-unpacked)"

    def close(self) -> None:
        super().close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def _unpack(path: str, kind: str, progress: Progress | None) -> FileSource:
    limit = int(os.environ.get("SMMU_FORENSICS_MAX_UNPACK", DEFAULT_MAX_UNPACK))
    tmpdir = tempfile.gettempdir()
    fd, tmp = tempfile.mkstemp(prefix="smmu-forensics-", suffix=".unpacked", dir=tmpdir)
    total_in = os.path.getsize(path)
    written = 0
    try:
        with open(path, "rb") as fin, os.fdopen(fd, "wb") as fout:
            if kind == "zstd":
                import zstandard

                reader = zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(fin, read_across_frames=True)
                read = reader.read
            elif kind == "gzip":
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                read = _stream(fin, d.decompress)
            elif kind == "xz":
                read = _stream(fin, lzma.LZMADecompressor().decompress)
            else:
                read = _stream(fin, bz2.BZ2Decompressor().decompress)
            while True:
                chunk = read(8 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > limit:
                    raise DumpError(
                        path,
                        f"{kind} content exceeds {limit} bytes (SMMU_FORENSICS_MAX_UNPACK); unpack it by hand",
                    )
                if written & ((256 << 20) - 1) < len(chunk):
                    free = shutil.disk_usage(tmpdir).free
                    if free < (64 << 20):
                        raise DumpError(path, f"temporary folder {tmpdir} is full while unpacking; unpack it by hand")
                fout.write(chunk)
                if progress:
                    progress(f"unpacking {kind}", fin.tell(), total_in)
    except DumpError:
        os.unlink(tmp)
        raise
    except Exception as exc:
        os.unlink(tmp)
        hint = WRAPPERS_HINT.get(kind, "")
        raise DumpError(path, f"{kind} stream is corrupt ({exc}); try: {hint}") from None
    except BaseException:  # Ctrl-C, SystemExit: no partial file left behind
        os.unlink(tmp)
        raise
    return _Unpacked(tmp, path, kind)


WRAPPERS_HINT = {name: hint for name, hint in WRAPPERS.values()}


def _stream(fin, fn):  # type: ignore[no-untyped-def]
    buf = b""

    def read(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            raw = fin.read(1 << 20)
            if not raw:
                break
            buf += fn(raw)
        out, buf = buf[:n], buf[n:]
        return out

    return read


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
    return _unpack(path, kind, progress)

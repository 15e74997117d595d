"""Whole-file wrappers (``.gz``, ``.xz``, ``.zst``, ``.bz2``): unpacked once, streamed, bounded, cached.

- **Streaming with an output cap per call**: every codec is asked for at most one chunk at a time
  (zlib/lzma/bz2 ``max_length``, zstd's stream reader), so a decompression bomb costs one chunk of
  memory, never its whole expansion; the total is capped by ``SMMU_FORENSICS_MAX_UNPACK`` (bytes,
  default 64 GiB) and by the disk: unpacking stops when the target folder would keep less than
  ``MIN_FREE`` bytes free.
- **Cache**: the unpacked file is kept in the user's cache folder (``$SMMU_FORENSICS_CACHE``, else
  ``$XDG_CACHE_HOME/smmu-forensics``, else ``~/.cache/smmu-forensics``), named by the wrapped file's
  identity (real path, device, inode, size, modification time), so ``info``, ``xp`` and ``inspect``
  on the same ``.zst`` unpack it once.  The cache is bounded (``SMMU_FORENSICS_CACHE_MAX`` bytes,
  default 32 GiB; least recently used files go first), ``SMMU_FORENSICS_NO_CACHE=1`` (or
  ``smmu-forensics --no-cache``) unpacks to a temporary file deleted on close, and
  ``smmu-forensics cache --clear`` empties it.  A partial file never survives: it is written under
  a temporary name and renamed only when complete; any exit (error, Ctrl-C) deletes it.
- **Progress in output bytes**, against the size the wrapper records when it records one (zstd's
  frame content size, xz's index, gzip's ISIZE when plausible), else open-ended.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable

from smmu_forensics.dumps.source import FileSource, open_regular
from smmu_forensics.errors import DumpError

__all__ = ["unpack", "cache_dir", "cache_entries", "clear_cache", "recorded_size", "DEFAULT_MAX_UNPACK", "DEFAULT_CACHE_MAX"]

Progress = Callable[[str, int, int], None]

DEFAULT_MAX_UNPACK = 64 << 30
DEFAULT_CACHE_MAX = 32 << 30
MIN_FREE = 256 << 20  # never fill a disk: stop when less than this would stay free
CHUNK = 8 << 20  # output per codec call
HINTS = {"gzip": "gzip -dk FILE", "xz": "xz -dk FILE", "zstd": "zstd -d --long=31 FILE", "bzip2": "bunzip2 -k FILE"}


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def cache_dir() -> str | None:
    """The cache folder, or None when caching is off."""
    if os.environ.get("SMMU_FORENSICS_NO_CACHE"):
        return None
    base = os.environ.get("SMMU_FORENSICS_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "smmu-forensics")
    return base


def cache_entries() -> list[tuple[str, int, float]]:
    """(path, size, last use) of every cached unpacked file, most recently used first."""
    d = cache_dir()
    out = []
    if d and os.path.isdir(d):
        for name in os.listdir(d):
            if name.endswith(".unpacked"):
                p = os.path.join(d, name)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                out.append((p, st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: -e[2])


def clear_cache() -> tuple[int, int]:
    """Delete every cached file (and stale partial ones); (files, bytes) removed."""
    d = cache_dir()
    n = size = 0
    if d and os.path.isdir(d):
        for name in os.listdir(d):
            if name.endswith((".unpacked", ".partial")):
                p = os.path.join(d, name)
                try:
                    size += os.path.getsize(p)
                    os.unlink(p)
                    n += 1
                except OSError:
                    pass
    return n, size


def _key(path: str) -> str:
    st = os.stat(path)
    ident = f"{os.path.realpath(path)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def recorded_size(path: str, kind: str) -> int:
    """The unpacked size the wrapper itself records, or 0 when it records none (progress only;
    never trusted as a bound).

    >>> import gzip, os, tempfile
    >>> fd, p = tempfile.mkstemp(); os.write(fd, gzip.compress(b"x" * 5000)); os.close(fd)
    4...
    >>> recorded_size(p, "gzip"); os.unlink(p)
    5000
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if kind == "zstd":
                import zstandard

                n = zstandard.frame_content_size(f.read(18))
                return n if n > 0 else 0
            if kind == "gzip" and size >= 18:
                f.seek(size - 4)
                isize = struct.unpack("<I", f.read(4))[0]
                return isize if isize >= size // 1100 and size < (4 << 30) else 0  # ISIZE is mod 2^32
            if kind == "xz" and size >= 24:
                return _xz_size(f, size)
    except Exception:  # noqa: BLE001 - a hint only
        return 0
    return 0


def _xz_size(f, size: int) -> int:  # type: ignore[no-untyped-def]
    """Sum of the uncompressed sizes in the last stream's index (xz file format 1.0.4, 4 and 5)."""
    f.seek(size - 12)
    footer = f.read(12)
    if footer[10:12] != b"YZ":
        return 0
    backward = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
    if backward > min(size, 1 << 24):
        return 0
    f.seek(size - 12 - backward)
    idx = f.read(backward)
    pos = 1  # index indicator 0x00

    def varint() -> int:
        nonlocal pos
        v = shift = 0
        while pos < len(idx) and shift < 63:
            b = idx[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v
        raise ValueError("bad xz index")

    total = 0
    for _ in range(min(varint(), 1 << 20)):
        varint()  # unpadded size
        total += varint()
    return total


def _reader(fin, kind: str) -> Callable[[int], bytes]:  # type: ignore[no-untyped-def]
    """read(n): at most n bytes of output per call, whatever the input expands to."""
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(fin, read_across_frames=True).read
    if kind == "gzip":
        return _bounded(fin, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), gzip=True)
    if kind == "xz":
        return _bounded(fin, lzma.LZMADecompressor)
    return _bounded(fin, bz2.BZ2Decompressor)


def _bounded(fin, make, gzip: bool = False):  # type: ignore[no-untyped-def]
    """A reader over zlib/lzma/bz2 decompressors asking each call for at most n bytes of output;
    concatenated members (gzip, bzip2 files made by ``cat``) continue with a fresh decompressor,
    zero padding after the last member is ignored."""
    state = {"d": make(), "pending": b""}

    def feed() -> bytes:
        data, state["pending"] = state["pending"], b""
        return data or fin.read(1 << 20)

    def read(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            d = state["d"]
            if d.eof:
                rest = d.unused_data + state["pending"]
                while rest and not rest.strip(b"\0"):
                    rest = fin.read(1 << 20)  # zero padding: more members may follow it, or nothing
                if not rest:
                    rest = fin.read(1 << 20)
                    if not rest:
                        break
                state["d"], state["pending"] = make(), rest
                continue
            if gzip:
                data = feed()
                if not data:
                    raise EOFError("compressed stream ends early")
                chunk = d.decompress(data, n - len(out))
                state["pending"] = d.unconsumed_tail
            else:
                data = feed() if d.needs_input else b""
                if d.needs_input and not data:
                    raise EOFError("compressed stream ends early")
                chunk = d.decompress(data, n - len(out))
            out += chunk
        return bytes(out)

    return read


class _Temporary(FileSource):
    """An unpacked copy deleted when closed (caching off)."""

    def __init__(self, tmp: str, name: str) -> None:
        super().__init__(tmp)
        self.tmp, self.name = tmp, name

    def close(self) -> None:
        super().close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def unpack(path: str, kind: str, progress: Progress | None) -> FileSource:
    """The unpacked content of ``path`` as a file (cached, or temporary when caching is off)."""
    name = f"{path} ({kind}-unpacked)"
    cdir = cache_dir()
    final = None
    if cdir is not None:
        try:
            os.makedirs(cdir, mode=0o700, exist_ok=True)
            final = os.path.join(cdir, _key(path) + ".unpacked")
            if os.path.exists(final):
                os.utime(final)  # last use, for eviction
                src = FileSource(final)
                src.name = name
                return src
        except OSError:
            cdir = final = None
    folder = cdir or tempfile.gettempdir()
    fd, tmp = tempfile.mkstemp(prefix="smmu-forensics-", suffix=".partial" if final else ".unpacked", dir=folder)
    try:
        _write(path, kind, fd, folder, progress)
        if final is None:
            return _Temporary(tmp, name)
        os.replace(tmp, final)
        _evict(cdir, keep=final)  # type: ignore[arg-type]
        src = FileSource(final)
        src.name = name
        return src
    except BaseException:  # errors, Ctrl-C, SystemExit: no partial file left behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write(path: str, kind: str, fd: int, folder: str, progress: Progress | None) -> None:
    limit = _env_int("SMMU_FORENSICS_MAX_UNPACK", DEFAULT_MAX_UNPACK)
    total = recorded_size(path, kind) if progress or kind == "zstd" else 0
    label = f"unpacking {kind}"
    written = 0
    with open_regular(path) as fin, os.fdopen(fd, "wb") as fout:
        try:
            read = _reader(fin, kind)
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > limit:
                    raise DumpError(path, f"{kind} content exceeds {limit} bytes (SMMU_FORENSICS_MAX_UNPACK); unpack it by hand")
                if written & ((256 << 20) - 1) < len(chunk) and shutil.disk_usage(folder).free < MIN_FREE + len(chunk):
                    raise DumpError(path, f"{folder} would fill up while unpacking ({written} bytes so far); unpack it by hand "
                                          "where there is room, or set SMMU_FORENSICS_CACHE")
                fout.write(chunk)
                if progress:
                    progress(label, written, max(total, written + 1) if total else 0)
            if kind == "zstd" and written < total:  # the stream reader stops quietly at a cut frame: its header says more
                raise EOFError(f"compressed stream ends early: {written} of the {total} bytes its frame header records")
        except DumpError:
            raise
        except Exception as exc:
            raise DumpError(path, f"{kind} stream is corrupt ({exc}); try: {HINTS.get(kind, '')}") from None
    if progress:
        progress(label, written, written)


def _evict(cdir: str, keep: str) -> None:
    """Least recently used cached files go until the cache fits SMMU_FORENSICS_CACHE_MAX."""
    budget = _env_int("SMMU_FORENSICS_CACHE_MAX", DEFAULT_CACHE_MAX)
    used = 0
    for p, size, _ in cache_entries():  # most recent first
        used += size
        if used > budget and p != keep:
            try:
                os.unlink(p)
            except OSError:
                pass

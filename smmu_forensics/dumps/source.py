"""Byte sources: where a dump format's bytes come from.

A format layer reads its file through a :class:`ByteSource` (``pread`` by offset), so the same
ELF or kdump reader works on a plain file (memory-mapped, read-only) and on makedumpfile's
flattened stream (indexed once, see :mod:`smmu_forensics.dumps.flattened`).
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import stat

from smmu_forensics.errors import DumpError

#: reads up to this size slice the mapping; larger ones use pread (no mapped pages stay resident)
MMAP_READ_MAX = 1 << 12


class ByteSource:
    """Random access to a byte string of known logical ``size``."""

    name: str = "?"
    size: int = 0

    def pread(self, offset: int, size: int) -> bytes:  # pragma: no cover - interface
        """Up to ``size`` bytes at ``offset``; fewer only at the end of the source."""
        raise NotImplementedError

    def pread_exact(self, offset: int, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes or a one-line :class:`DumpError` naming ``what``."""
        if offset < 0 or size < 0:
            raise DumpError(self.name, f"{what}: negative offset or size")
        b = self.pread(offset, size)
        if len(b) != size:
            raise DumpError(
                self.name,
                f"{what} at offset {offset:#x} (+{size:#x}) is past the end of the file "
                f"({self.size:#x} bytes): file truncated",
            )
        return b

    #: the source may hold ranges nobody wrote (a flattened stream with a record missing)
    has_gaps: bool = False

    def unwritten(self, offset: int, size: int) -> tuple[int, int] | None:
        """The first run of ``[offset, offset+size)`` that no writer put there (never zeros to
        trust): past the end, or a gap of a flattened stream; None when every byte is real."""
        end = offset + size
        return (max(offset, self.size), end) if end > self.size and size > 0 else None

    def unwritten_many(self, offsets, sizes):  # type: ignore[no-untyped-def]
        """Vectorised :meth:`unwritten`: a bool array, True where ``[offset, offset+size)`` holds
        any byte no writer put there (numpy arrays of uint64/int64 in, bool out)."""
        return offsets + sizes > self.size

    def close(self) -> None:
        pass

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileobj(self) -> io.RawIOBase:
        """A read-only seekable file object over this source (for pyelftools)."""
        return _SourceIO(self)


MAX_EXTENTS = 1 << 16  # data extents listed per query

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def open_fd(path: str) -> int:
    """A read-only descriptor of a regular file; anything else (FIFO, socket, device, folder) is
    refused with an :class:`OSError` whose ``strerror`` says what it is, without blocking (a FIFO
    is opened non-blocking, looked at, and closed).

    >>> open_fd("/dev/null")
    Traceback (most recent call last):
    ...
    OSError: [Errno 22] not a regular file (a character device): '/dev/null'
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise OSError(errno.EINVAL, f"not a regular file ({what})", path)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_regular(path: str, mode: str = "rb"):  # type: ignore[no-untyped-def]
    """``open(path, mode)`` for reading, refusing anything but a regular file (see :func:`open_fd`)."""
    return os.fdopen(open_fd(path), mode)


class FileSource(ByteSource):
    """A regular file, opened read-only and memory-mapped when possible."""

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            self._fd = open_fd(path)
        except OSError as exc:
            raise DumpError(path, f"cannot open: {exc.strerror}") from None
        try:
            st = os.fstat(self._fd)
            self.size = st.st_size
            self._mm: mmap.mmap | None = None
            if self.size > 0:
                try:
                    self._mm = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError):
                    self._mm = None  # a pipe or special file: fall back to pread
        except OSError as exc:
            os.close(self._fd)
            raise DumpError(path, f"cannot read: {exc.strerror}") from None

    def pread(self, offset: int, size: int) -> bytes:
        if size <= 0 or offset >= self.size or offset < 0:
            return b""
        if self._mm is not None and size <= MMAP_READ_MAX:
            return self._mm[offset : offset + size]
        return os.pread(self._fd, size, offset)

    def data_extents(self, offset: int, size: int) -> list[tuple[int, int]]:
        """The parts of ``[offset, offset+size)`` that hold data, as (offset, size): a sparse file's
        holes (SEEK_HOLE) read as zeros and are left out.  At most MAX_EXTENTS; beyond, the rest whole."""
        end = min(offset + size, self.size)
        out: list[tuple[int, int]] = []
        pos = offset
        try:
            while pos < end:
                if len(out) >= MAX_EXTENTS:
                    out.append((pos, end - pos))
                    break
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
                if data >= end:
                    break
                hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), end)
                out.append((data, hole - data))
                pos = hole
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data from pos to the end of the file
                return out
            return out + [(pos, end - pos)]  # a filesystem without SEEK_DATA: the rest, whole
        return out

    def view(self, offset: int, size: int) -> memoryview | None:
        """A zero-copy view (mmap) of ``[offset, offset+size)`` if fully inside the file."""
        if self._mm is None or offset < 0 or offset + size > self.size:
            return None
        return memoryview(self._mm)[offset : offset + size]

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a view is still alive; the mapping goes with the process
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _SourceIO(io.RawIOBase):
    def __init__(self, src: ByteSource) -> None:
        self._src = src
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._src.size + offset
        self._pos = max(self._pos, 0)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(self._src.size - self._pos, 0)
        b = self._src.pread(self._pos, size)
        self._pos += len(b)
        return b

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        b = self.read(len(buf))
        buf[: len(b)] = b
        return len(b)

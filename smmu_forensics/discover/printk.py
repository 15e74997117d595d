"""The kernel log from a dump: the lockless printk ring buffer (Linux 5.10+), as ``makedumpfile
--dump-dmesg`` and crash's ``log`` read it, laid out by VMCOREINFO alone.

Layout (kernel/printk/printk_ringbuffer.h): ``prb`` points at a ``printk_ringbuffer`` holding a
descriptor ring (``count_bits``; arrays ``descs`` of ``prb_desc`` and ``infos`` of ``printk_info``;
``head_id``/``tail_id``) and a text data ring (``size_bits``, ``data``, ``head_lpos``/``tail_lpos``).
A descriptor's ``state_var`` holds its id in the low bits and its state in the top two
(``DESC_FLAGS_SHIFT = BITS_PER_LONG - 2``: 0 reserved, 1 committed, 2 finalized, 3 reusable).  Its
``text_blk_lpos`` (begin, next) locates an ``unsigned long id`` followed by the text; a block
that would cross the end of the ring starts at offset 0 instead (``DATA_WRAPS(begin) + 1 ==
DATA_WRAPS(next)``); ``begin & 1`` marks a data-less record.  Every offset and size comes from
VMCOREINFO's ``OFFSET(...)``/``SIZE(...)``; nothing is assumed but the 64-bit word.

Bounded whatever the dump claims: at most 2^MAX_COUNT_BITS descriptors and a 2^MAX_SIZE_BITS
text ring; a record that does not check out (id mismatch, state, lengths) is skipped and counted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from smmu_forensics.discover.kva import KernelVA, TranslationError
from smmu_forensics.dumps.base import MemoryMissing, PhysicalMemory

__all__ = ["LogRecord", "KernelLog", "read_log", "read_legacy_log", "LogError"]

MAX_COUNT_BITS = 22  # 4M records; Linux uses size_bits - 5 (a 128 KiB log: 4096)
MAX_SIZE_BITS = 28  # a 256 MiB text ring (log_buf_len is at most 2 GiB in theory, MBs in practice)
MAX_LEGACY_LEN = 1 << MAX_SIZE_BITS
DESC_SV_BITS = 64
DESC_FLAGS_SHIFT = DESC_SV_BITS - 2
DESC_ID_MASK = (1 << DESC_FLAGS_SHIFT) - 1
STATE_COMMITTED, STATE_FINALIZED = 1, 2


class LogError(Exception):
    """The dump has no kernel log this reader can follow (one line: why)."""


@dataclass(frozen=True)
class LogRecord:
    seq: int
    ts_nsec: int
    text: str
    subsystem: str = ""
    device: str = ""  # e.g. "+pci:0000:00:01.0" (dev_printk_info)


@dataclass
class KernelLog:
    records: list[LogRecord] = field(default_factory=list)
    skipped: int = 0  # descriptors in the ring that did not check out
    source: str = ""  # where it came from (symbol and physical address)


class _Layout:
    """OFFSET/SIZE entries of VMCOREINFO, read with a clear error when one is missing."""

    def __init__(self, info: dict[str, str]) -> None:
        self.info = info

    def off(self, name: str) -> int:
        return self._get(f"OFFSET({name})")

    def size(self, name: str) -> int:
        return self._get(f"SIZE({name})")

    def _get(self, key: str) -> int:
        v = self.info.get(key)
        if v is None:
            raise LogError(f"VMCOREINFO lacks {key} (a kernel before 5.10, or no lockless printk)")
        try:
            n = int(v, 10)
        except ValueError:
            raise LogError(f"VMCOREINFO {key}={v!r} is not a number") from None
        if not 0 <= n < 1 << 20:
            raise LogError(f"VMCOREINFO {key}={n} is implausible")
        return n


def _u64(mem: PhysicalMemory, pa: int) -> int:
    return int.from_bytes(mem.read(pa, 8), "little")


def read_log(mem: PhysicalMemory, max_records: int | None = None) -> KernelLog:
    """Every record still in the ring, oldest first."""
    info = mem.vmcoreinfo()
    if "SYMBOL(prb)" not in info:
        if "SYMBOL(log_buf)" in info:
            return read_legacy_log(mem, max_records)
        raise LogError("VMCOREINFO has no SYMBOL(prb) nor SYMBOL(log_buf): no kernel log to read")
    try:
        kva = KernelVA.from_vmcoreinfo(info)
        prb_ptr_pa = kva.pa(int(info["SYMBOL(prb)"], 16))
        lay = _Layout(info)
        rb = kva.pa(_u64(mem, prb_ptr_pa))
        return _read(mem, kva, lay, rb, max_records)
    except (TranslationError, MemoryMissing, ValueError) as exc:
        raise LogError(f"kernel log not readable: {exc}") from None


def _read(mem: PhysicalMemory, kva: KernelVA, lay: _Layout, rb: int, max_records: int | None) -> KernelLog:
    dr = rb + lay.off("printk_ringbuffer.desc_ring")
    tr = rb + lay.off("printk_ringbuffer.text_data_ring")
    count_bits = _u64(mem, dr + lay.off("prb_desc_ring.count_bits")) & 0xFFFFFFFF
    size_bits = _u64(mem, tr + lay.off("prb_data_ring.size_bits")) & 0xFFFFFFFF
    if not 0 < count_bits <= MAX_COUNT_BITS or not 0 < size_bits <= MAX_SIZE_BITS:
        raise LogError(f"printk ring claims 2^{count_bits} records and 2^{size_bits} bytes of text: implausible")
    count, size = 1 << count_bits, 1 << size_bits
    d_sz, i_sz = lay.size("prb_desc"), lay.size("printk_info")
    descs = mem.read(kva.resolve(mem, _u64(mem, dr + lay.off("prb_desc_ring.descs"))), count * d_sz)
    infos = mem.read(kva.resolve(mem, _u64(mem, dr + lay.off("prb_desc_ring.infos"))), count * i_sz)
    data = mem.read(kva.resolve(mem, _u64(mem, tr + lay.off("prb_data_ring.data"))), size)
    tail = _u64(mem, dr + lay.off("prb_desc_ring.tail_id") + lay.off("atomic_long_t.counter")) & DESC_ID_MASK
    head = _u64(mem, dr + lay.off("prb_desc_ring.head_id") + lay.off("atomic_long_t.counter")) & DESC_ID_MASK
    log = KernelLog(source=f"printk ring buffer at {rb:#x} (2^{count_bits} records, {size} bytes of text)")
    n = ((head - tail) & DESC_ID_MASK) + 1
    if n > count:
        raise LogError(f"printk ring head {head:#x} and tail {tail:#x} are {n} records apart, more than its {count}")
    f = _Fields(lay)
    for k in range(min(n, max_records or n)):
        rid = (tail + k) & DESC_ID_MASK
        rec = f.record(descs, infos, data, rid, count, size)
        if rec is None:
            log.skipped += 1
        else:
            log.records.append(rec)
    return log


class _Fields:
    """The offsets a record needs, resolved once."""

    def __init__(self, lay: _Layout) -> None:
        self.d_sz, self.i_sz = lay.size("prb_desc"), lay.size("printk_info")
        self.sv = lay.off("prb_desc.state_var") + lay.off("atomic_long_t.counter")
        self.blk = lay.off("prb_desc.text_blk_lpos")
        self.begin, self.next = lay.off("prb_data_blk_lpos.begin"), lay.off("prb_data_blk_lpos.next")
        self.seq, self.ts = lay.off("printk_info.seq"), lay.off("printk_info.ts_nsec")
        self.text_len = lay.off("printk_info.text_len")
        self.dev = lay.off("printk_info.dev_info")
        self.subsys = self.dev + lay.off("dev_printk_info.subsystem")
        self.device = self.dev + lay.off("dev_printk_info.device")
        self.subsys_len = int(lay.info.get("LENGTH(printk_info_subsystem)", "16"), 10)
        self.device_len = int(lay.info.get("LENGTH(printk_info_device)", "48"), 10)

    def record(self, descs: bytes, infos: bytes, data: bytes, rid: int, count: int, size: int) -> LogRecord | None:
        idx = rid & (count - 1)
        d = idx * self.d_sz
        sv = int.from_bytes(descs[d + self.sv : d + self.sv + 8], "little")
        if sv & DESC_ID_MASK != rid or (sv >> DESC_FLAGS_SHIFT) not in (STATE_COMMITTED, STATE_FINALIZED):
            return None
        begin = struct.unpack_from("<Q", descs, d + self.blk + self.begin)[0]
        nxt = struct.unpack_from("<Q", descs, d + self.blk + self.next)[0]
        i = idx * self.i_sz
        seq, ts = struct.unpack_from("<Q", infos, i + self.seq)[0], struct.unpack_from("<Q", infos, i + self.ts)[0]
        text_len = struct.unpack_from("<H", infos, i + self.text_len)[0]
        text = b""
        if not begin & 1:  # LPOS_DATALESS
            if begin < nxt and (begin >> _bits(size)) == (nxt >> _bits(size)):  # a regular block
                start, length = begin & (size - 1), nxt - begin
            elif (begin >> _bits(size)) + 1 == (nxt >> _bits(size)):  # wrapped: the text starts the ring
                start, length = 0, nxt & (size - 1)
            else:
                return None
            if length < 8 or start + length > size:
                return None
            text = data[start + 8 : start + length][:text_len]
        sub = infos[i + self.subsys : i + self.subsys + self.subsys_len].split(b"\0", 1)[0]
        dev = infos[i + self.device : i + self.device + self.device_len].split(b"\0", 1)[0]
        return LogRecord(seq, ts, text.decode("utf-8", "replace"), sub.decode("ascii", "replace"), dev.decode("ascii", "replace"))


def _bits(size: int) -> int:
    return size.bit_length() - 1



def read_legacy_log(mem: PhysicalMemory, max_records: int | None = None) -> KernelLog:
    """The log of a kernel before 5.10: ``log_buf`` of ``struct printk_log`` records, as
    kernel/printk/printk.c (4.x-5.9) lays them out and ``log_buf_vmcoreinfo_setup()`` describes
    them (``SYMBOL(log_buf)``, ``log_buf_len``, ``log_first_idx``, ``log_next_idx``,
    ``SIZE(printk_log)``, ``OFFSET(printk_log.ts_nsec|len|text_len)``).  Each record is its header,
    then ``text_len`` bytes of text; ``len`` is the whole record, 0 marks the wrap back to offset 0."""
    info = mem.vmcoreinfo()
    try:
        kva = KernelVA.from_vmcoreinfo(info)
        lay = _Layout(info)
        sym = lambda name: kva.pa(int(info[f"SYMBOL({name})"], 16))  # noqa: E731
        buf = kva.resolve(mem, _u64(mem, sym("log_buf")))
        size = int.from_bytes(mem.read(sym("log_buf_len"), 4), "little")
        first = int.from_bytes(mem.read(sym("log_first_idx"), 4), "little")
        nxt = int.from_bytes(mem.read(sym("log_next_idx"), 4), "little")
        hdr, ts_off, len_off, tl_off = lay.size("printk_log"), lay.off("printk_log.ts_nsec"), lay.off("printk_log.len"), \
            lay.off("printk_log.text_len")
        if not 0 < size <= MAX_LEGACY_LEN or first >= size or nxt >= size:
            raise LogError(f"log_buf claims {size} bytes with indexes {first}/{nxt}: implausible")
        data = mem.read(buf, size)
    except KeyError as exc:
        raise LogError(f"VMCOREINFO lacks {exc.args[0]}") from None
    except (TranslationError, MemoryMissing, ValueError) as exc:
        raise LogError(f"kernel log not readable: {exc}") from None
    log = KernelLog(source=f"log_buf at {buf:#x} ({size} bytes, pre-5.10 format)")
    idx, seq, wrapped = first, 0, False
    while idx != nxt and len(log.records) < (max_records or size // hdr):
        if idx + hdr > size:
            log.skipped += 1
            break
        ln = int.from_bytes(data[idx + len_off : idx + len_off + 2], "little")
        if ln == 0:  # the writer wrapped here
            if wrapped:
                break
            idx, wrapped = 0, True
            continue
        tl = int.from_bytes(data[idx + tl_off : idx + tl_off + 2], "little")
        if ln < hdr or idx + ln > size or hdr + tl > ln:
            log.skipped += 1
            break
        ts = int.from_bytes(data[idx + ts_off : idx + ts_off + 8], "little")
        log.records.append(LogRecord(seq, ts, data[idx + hdr : idx + hdr + tl].decode("utf-8", "replace")))
        seq += 1
        idx += ln
    return log

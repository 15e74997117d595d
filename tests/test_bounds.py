"""Bounds in proportion to the file: indexes built in O(n log n), whatever the dump claims."""

from __future__ import annotations

import os
import struct
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smmu_forensics.dumps.segments import Segment, _disjoint


def reference(segs: list[Segment]) -> list[Segment]:
    """The plain quadratic statement of the rule: largest segment first, each keeps what is left."""
    segs = sorted((s for s in segs if s.memsz > 0), key=lambda s: (s.paddr, -s.memsz))
    kept: list[Segment] = []
    for s in sorted(segs, key=lambda s: -s.memsz):
        pieces = [(s.paddr, s.end)]
        for k in kept:
            nxt = []
            for a, b in pieces:
                if k.end <= a or k.paddr >= b:
                    nxt.append((a, b))
                    continue
                if a < k.paddr:
                    nxt.append((a, k.paddr))
                if k.end < b:
                    nxt.append((k.end, b))
            pieces = nxt
        for a, b in pieces:
            d = a - s.paddr
            kept.append(Segment(a, b - a, s.offset + d, max(0, min(s.filesz - d, b - a)), s.excluded_reason))
    return sorted(kept, key=lambda s: s.paddr)


seg = st.tuples(st.integers(0, 1 << 12), st.integers(1, 300), st.integers(0, 1 << 20), st.integers(0, 300)).map(
    lambda t: Segment(t[0] * 16, t[1] * 16, t[2], min(t[3], t[1]) * 16))


@settings(max_examples=300, deadline=None)
@given(st.lists(seg, min_size=1, max_size=30))
def test_overlap_sweep_equals_the_plain_rule(segs):
    assert _disjoint(segs) == reference(segs)


def test_a_chain_of_65535_overlapping_loads_is_fast():
    segs = [Segment(i * 4096, 8192 + i, i * 4096, 8192) for i in range(65535)]
    t = time.monotonic()
    out = _disjoint(segs)
    assert time.monotonic() - t < 10 and len(out) == 65535
    assert all(a.end <= b.paddr for a, b in zip(out, out[1:]))


def _flat(path, body_writer) -> None:
    from smmu_forensics.dumps.structs import FlatHeader

    with open(path, "wb") as f:
        f.write(FlatHeader.build({"type": 1, "version": 1}).ljust(4096, b"\0"))
        body_writer(f)


def test_flattened_runs_of_empty_records_and_tiny_records_are_refused(tmp_path):
    import struct

    from conftest import run_cli

    sparse = tmp_path / "zeros.flat"
    _flat(sparse, lambda f: f.truncate(1 << 30))  # 1 GiB of {0, 0} records, sparse on disk
    tiny = tmp_path / "tiny.flat"
    rec = b"".join(struct.pack(">qq", i, 1) + b"\x7f" for i in range(1 << 16))

    def many(f) -> None:
        for _ in range(65):
            f.write(rec)
        f.write(struct.pack(">qq", -1, -1))

    _flat(tiny, many)
    for path, what in ((sparse, b"empty flattened records in a row"), (tiny, b"averaging under 512 bytes")):
        t = time.monotonic()
        p = run_cli("info", str(path))
        assert p.returncode == 3 and what in p.stderr and p.stderr.count(b"\n") == 1, p.stderr
        assert time.monotonic() - t < 10


def _elf(path, phdrs: list[tuple[str, int, int, int, int]], size: int) -> None:
    """An ELF core from pyelftools' own structures: phdrs (type, offset, paddr, filesz, memsz)."""
    from elftools.construct import Container as C

    from smmu_forensics.dumps.structs import elf_structs

    st = elf_structs()
    ident = C(EI_MAG=list(b"\x7fELF"), EI_CLASS="ELFCLASS64", EI_DATA="ELFDATA2LSB", EI_VERSION="EV_CURRENT",
              EI_OSABI="ELFOSABI_SYSV", EI_ABIVERSION=0)
    with open(path, "wb") as f:
        f.write(st.Elf_Ehdr.build(C(e_ident=ident, e_type="ET_CORE", e_machine="EM_AARCH64", e_version="EV_CURRENT", e_entry=0,
                                    e_phoff=64, e_shoff=0, e_flags=0, e_ehsize=64, e_phentsize=56, e_phnum=min(len(phdrs), 0xFFFF),
                                    e_shentsize=64, e_shnum=0, e_shstrndx=0)))
        one = st.Elf_Phdr
        f.write(b"".join(one.build(C(p_type=t, p_flags=7, p_offset=o, p_vaddr=a, p_paddr=a, p_filesz=fs, p_memsz=ms, p_align=0))
                         for t, o, a, fs, ms in phdrs))
        f.truncate(size)


def _peak(args: list[str]) -> tuple[int, float, str]:
    import subprocess

    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "smmu_forensics", *args], capture_output=True, timeout=120)
    err = p.stderr.decode().strip().splitlines()
    return p.returncode, time.monotonic() - t, "\n".join(err[:-1]) + f"\nrss_kib={err[-1]}"


@pytest.mark.skipif(not os.path.exists("/usr/bin/time"), reason="needs /usr/bin/time")
def test_elf_claims_stay_bounded(tmp_path):
    """40 PT_NOTEs of 64 MiB each (sparse), 65,534 overlapping PT_LOADs, and too many program
    headers: each within 10 s and 300 MB, or a one-line refusal."""
    notes = tmp_path / "notes.elf"
    _elf(notes, [("PT_NOTE", 1 << 20, 0, 64 << 20, 64 << 20) for _ in range(40)] + [("PT_LOAD", 4096, 0x40000000, 4096, 4096)],
         (1 << 20) + (64 << 20))
    chain = tmp_path / "chain.elf"
    n = 65534  # 65535 is PN_XNUM
    _elf(chain, [("PT_LOAD", 4 << 20, 0x40000000 + 4096 * i, 8192 + i, 8192 + i) for i in range(n)], (4 << 20) + 4096 * n + 16384)
    for path, ok in ((notes, (0,)), (chain, (0,))):
        code, secs, err = _peak(["info", str(path), "--format", "json"])
        rss = int(err.rsplit("rss_kib=", 1)[1])
        assert code in ok and secs < 10 and rss < 300_000, (path.name, code, secs, err)


def test_synth_refuses_a_terabyte_of_ram(tmp_path):
    from conftest import run_cli

    sc = tmp_path / "big.yaml"
    sc.write_text("machine: {ram: [{start: 0x40000000, size: 0x10000000000}]}\n")
    t = time.monotonic()
    p = run_cli("synth", str(sc), "-o", str(tmp_path / "big.elf"))
    assert p.returncode == 2 and b"SMMU_FORENSICS_SYNTH_MAX_RAM" in p.stderr and time.monotonic() - t < 10
    sc.write_text("machine: {ram: [{size: 0x1000}]}\n")
    p = run_cli("synth", str(sc), "-o", str(tmp_path / "x.elf"))
    assert p.returncode == 2 and b"missing key 'start'" in p.stderr


def test_lzo_pages_cannot_expand_unbounded():
    """lzallright's size hint is not a cap: a stored LZO page larger than 256 KiB is refused before
    decoding; one under it expands at most 255-fold (64 MiB) and is corrupt when it is not a page."""
    import lzallright

    from smmu_forensics.dumps.codecs import DUMP_DH_COMPRESSED_LZO, MAX_LZO_INPUT, decompress_page
    from smmu_forensics.errors import CorruptPage

    comp = lzallright.LZOCompressor()
    big = comp.compress(os.urandom(64) * (MAX_LZO_INPUT // 8))
    big += bytes(max(0, MAX_LZO_INPUT + 1 - len(big)))
    t = time.monotonic()
    with pytest.raises(CorruptPage, match="is not decoded"):
        decompress_page(DUMP_DH_COMPRESSED_LZO, big, 1 << 20)
    small = comp.compress(bytes(16 << 20))
    assert len(small) <= MAX_LZO_INPUT
    with pytest.raises(CorruptPage):
        decompress_page(DUMP_DH_COMPRESSED_LZO, small, 4096)
    assert time.monotonic() - t < 5


def test_garbage_widths_never_become_huge_integers():
    """A 6.12-linear-shaped candidate whose sid_bits is a garbage u32 is rejected before `1 << sid_bits`
    (that integer alone would be 512 MB): the real capture's discovery pass stayed at 150 MB."""
    from smmu_forensics.discover.driver import _decode_612_linear

    class NoMemory:
        def read_partial(self, *a):  # never reached
            raise AssertionError("read")

    t = time.monotonic()
    data = struct.pack("<IIQQI", 0, 0xFFFFFFF0, 0xFFFF000040000000, 0x40000000, 1 << 20)
    assert _decode_612_linear(NoMemory(), 0x1000, data, 0, 0xFFFFFFF0) is None
    assert time.monotonic() - t < 0.1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * 8 * (1 << 20) - 1), st.integers(1, 3000)), max_size=12), st.integers(0, 4))
def test_bitmap_runs_and_ranks_skip_holes_exactly(tmp_path_factory, sets, tail_holes):
    """Bitmap.runs and Bitmap.rank over a sparse file (chunks never written are holes, skipped
    unread) equal the plain computation over the same bits."""
    import numpy as np

    from smmu_forensics.dumps.kdump_parts import BITMAP_CHUNK, Bitmap
    from smmu_forensics.dumps.source import FileSource

    nbytes = 5 * BITMAP_CHUNK + 4096 * tail_holes
    bits = np.zeros(nbytes * 8, dtype=np.uint8)
    for a, n in sets:
        bits[a : a + n] = 1
    packed = np.packbits(bits, bitorder="little").tobytes()
    path = tmp_path_factory.mktemp("bm") / "bitmap"
    with open(path, "wb") as f:
        for k in range(0, nbytes, BITMAP_CHUNK):
            piece = packed[k : k + BITMAP_CHUNK]
            if any(piece):
                f.seek(4096 + k)
                f.write(piece)
        f.truncate(4096 + nbytes)
    with FileSource(str(path)) as src:
        bm = Bitmap(src, 4096, nbytes)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], bits, [0])).astype(np.int8)))
        assert bm.runs(nbytes * 8) == list(zip(edges[0::2].tolist(), edges[1::2].tolist()))
        cum = np.concatenate(([0], np.cumsum(bits, dtype=np.int64)))
        for b in [0, 1, nbytes * 8 // 3, nbytes * 8 - 1, nbytes * 8] + [a for a, _ in sets]:
            assert Bitmap(src, 4096, nbytes).rank(b) == cum[b]

"""Bounds in proportion to the file: indexes built in O(n log n), whatever the dump claims."""

from __future__ import annotations

import time

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

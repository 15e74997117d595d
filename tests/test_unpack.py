"""Whole-file wrappers: every codec streamed with bounded memory, concatenated members, truncated
streams refused, the cache reused and bounded, progress in output bytes."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess
import sys

import pytest
import zstandard

from conftest import CARVED, run_cli
from smmu_forensics.dumps import unpack
from smmu_forensics.dumps.sniff import open_dump
from smmu_forensics.errors import DumpError

DATA = CARVED.read_bytes()
PACK = {
    "gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("SMMU_FORENSICS_CACHE", str(d))
    monkeypatch.delenv("SMMU_FORENSICS_NO_CACHE", raising=False)
    return d


@pytest.mark.parametrize("kind", list(PACK))
def test_every_codec_unpacks_the_same_bytes_and_records_its_size(tmp_path, cache, kind):
    p = tmp_path / "d.elf.x"
    p.write_bytes(PACK[kind](DATA))
    seen = []
    src = unpack.unpack(str(p), kind, lambda label, done, total: seen.append((done, total)))
    assert src.pread(0, len(DATA) + 10) == DATA
    src.close()
    if kind != "bzip2":  # bzip2 records no size: open-ended progress
        assert unpack.recorded_size(str(p), kind) == len(DATA)
    assert seen[-1] == (len(DATA), len(DATA))  # progress counts output bytes and ends at the end
    assert all(done <= len(DATA) for done, _ in seen)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_concatenated_members_and_padding(tmp_path, cache, kind):
    half = len(DATA) // 2
    p = tmp_path / "cat.x"
    p.write_bytes(PACK[kind](DATA[:half]) + PACK[kind](DATA[half:]) + (b"\0" * 512 if kind == "xz" else b""))
    with unpack.unpack(str(p), kind, None) as src:
        assert src.pread(0, len(DATA)) == DATA


@pytest.mark.parametrize("kind", list(PACK))
def test_truncated_stream_is_refused_and_leaves_nothing(tmp_path, cache, kind):
    p = tmp_path / "cut.x"
    blob = PACK[kind](DATA)
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DumpError, match="corrupt|ends early"):
        unpack.unpack(str(p), kind, None)
    assert not cache.exists() or os.listdir(cache) == []


def test_cache_is_reused_bounded_and_cleared(tmp_path, cache, monkeypatch):
    p = tmp_path / "d.elf.zst"
    p.write_bytes(PACK["zstd"](DATA))
    with open_dump(str(p)) as mem:
        assert mem.read(0x431BE000, 16).hex() == "0900c67a000000000940c67a00000000"
    (entry,) = unpack.cache_entries()
    calls = []
    with unpack.unpack(str(p), "zstd", lambda *a: calls.append(a)):
        pass
    assert calls == []  # the second open unpacks nothing
    os.utime(p, ns=(1, 1))  # the file changed: a new entry; the budget keeps only the newest
    monkeypatch.setenv("SMMU_FORENSICS_CACHE_MAX", str(len(DATA) + 1))
    with unpack.unpack(str(p), "zstd", None):
        pass
    assert [e[0] for e in unpack.cache_entries()] != [entry[0]] and len(unpack.cache_entries()) == 1
    out = run_cli("cache", "--clear", env={"SMMU_FORENSICS_CACHE": str(cache)})
    assert out.returncode == 0 and b"removed 1 files" in out.stdout and unpack.cache_entries() == []
    out = run_cli("--no-cache", "info", str(p), env={"SMMU_FORENSICS_CACHE": str(cache)})
    assert out.returncode == 0 and unpack.cache_entries() == []


@pytest.mark.parametrize("kind", ["bzip2", "gzip", "xz"])
def test_bomb_costs_a_chunk_not_its_expansion(tmp_path, kind):
    """1 GiB of zeros in a few hundred KB (32 members of 32 MiB each): unpacking it (capped at
    128 MiB) stays far under the expansion in memory and stops at the cap with a one-line refusal."""
    p = tmp_path / "bomb"
    zero = bytes(32 << 20)
    member = bz2.compress(zero, 9) if kind == "bzip2" else gzip.compress(zero, 9) if kind == "gzip" else lzma.compress(zero)
    p.write_bytes(member * 32)
    code = ("import sys\n"
            "from smmu_forensics.dumps import unpack\n"
            "from smmu_forensics.errors import DumpError\n"
            f"try:\n    unpack.unpack({str(p)!r}, {kind!r}, None)\nexcept DumpError as e:\n    print('refused', e.problem)\n"
            "print(next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')))\n")
    env = dict(os.environ, SMMU_FORENSICS_MAX_UNPACK=str(128 << 20), SMMU_FORENSICS_NO_CACHE="1", TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120)
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("refused") and "SMMU_FORENSICS_MAX_UNPACK" in lines[0], r.stderr
    assert int(lines[1]) < 120_000  # KiB of peak RSS (VmHWM: this process alone): the interpreter, a few chunks
    assert [x for x in os.listdir(tmp_path) if x.startswith("smmu-forensics-")] == []

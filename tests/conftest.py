"""Shared test helpers.  Tests that need ../shared (the real captures) skip cleanly without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SCENARIOS = FIXTURES / "scenarios"
SHARED = Path(os.environ.get("SMMU_FORENSICS_SHARED", ROOT.parent / "shared"))
CAPTURE = SHARED / "captures" / "qemu-panic"
CARVED = FIXTURES / "qemu-panic-carved.elf"


def pytest_configure(config) -> None:  # noqa: ANN001
    """Unpacked dumps are cached in a folder of this test run, never in the user's cache."""
    import tempfile

    if "SMMU_FORENSICS_CACHE" not in os.environ:
        os.environ["SMMU_FORENSICS_CACHE"] = config._smmu_cache = tempfile.mkdtemp(prefix="smmu-forensics-test-cache-")


def pytest_unconfigure(config) -> None:  # noqa: ANN001
    if getattr(config, "_smmu_cache", None):
        shutil.rmtree(config._smmu_cache, ignore_errors=True)


def have_captures() -> bool:
    return (CAPTURE / "ground_truth.json").exists()


needs_captures = pytest.mark.skipif(not have_captures(), reason="../shared/captures not present")
needs_makedumpfile = pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")


def run_cli(*args: str, input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would (a fresh process: exit codes and stderr are real)."""
    e = dict(os.environ)
    e.pop("SMMU_FORENSICS_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "smmu_forensics", *args], capture_output=True, input=input, env=e, timeout=120)


def cli_json(*args: str) -> tuple[int, dict]:
    p = run_cli(*args, "--format", "json")
    assert p.stdout, p.stderr.decode()
    return p.returncode, json.loads(p.stdout)


@pytest.fixture(scope="session")
def truth() -> dict:
    if not have_captures():
        pytest.skip("../shared/captures not present")
    return json.loads((CAPTURE / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def carved_truth() -> dict:
    return json.loads((FIXTURES / "qemu-panic-carved.truth.json").read_text())


@pytest.fixture(scope="session")
def elf_capture(tmp_path_factory) -> Path:
    """The QEMU ELF capture, unpacked once per session (it ships zstd-compressed)."""
    if not have_captures():
        pytest.skip("../shared/captures not present")
    cached = Path("/tmp/check-captures/qemu-panic/qemu-dump.elf")
    if cached.exists() and cached.stat().st_size == 1073752035:
        return cached
    out = tmp_path_factory.mktemp("elf") / "qemu-dump.elf"
    import zstandard

    with open(CAPTURE / "qemu-dump.elf.zst", "rb") as fin, open(out, "wb") as fout:
        zstandard.ZstdDecompressor(max_window_size=1 << 31).copy_stream(fin, fout)
    return out


def capture_files() -> list[Path]:
    if not have_captures():
        return []
    return sorted(p for p in CAPTURE.iterdir() if p.suffix in (".kdump", ".flat"))

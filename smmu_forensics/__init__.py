"""smmu-forensics: ARM SMMUv3 stream tables in Linux crash dumps.

Layers, each importing only those below it (enforced by import-linter, pyproject.toml)::

    dumps/     one layer per dump format (and drgn's reader)  -> PhysicalMemory
    smmu/      bit layouts, schemas, fast decoders, table and page-table walks  -> Snapshot
    discover/  what the crashed kernel left in memory: log, firmware tables, driver structs
    rules/     the kdump adopt rules of each kernel version, findings  -> Verdict, Finding
    analysis   the one pipeline  -> Analysis
    report/    one model, one renderer per output format
    cli, api   the command line; the Python API (this package's exports)

The public API, imported lazily (``smmu-forensics --version`` stays fast):

>>> from smmu_forensics import inspect, open_dump
>>> inspect("fixtures/qemu-panic-carved.elf").exit_code
0
>>> with open_dump("fixtures/qemu-panic-carved.elf") as mem:
...     mem.read(0x431be000, 8).hex()
'0900c67a00000000'
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: name -> module that defines it
_EXPORTS = {
    "inspect": "smmu_forensics.api",
    "Inspection": "smmu_forensics.api",
    "memory_of": "smmu_forensics.api",
    "open_dump": "smmu_forensics.dumps.sniff",
    "PhysicalMemory": "smmu_forensics.dumps.base",
    "MemoryMissing": "smmu_forensics.dumps.base",
    "PageState": "smmu_forensics.dumps.base",
    "Analysis": "smmu_forensics.analysis",
    "analyze": "smmu_forensics.analysis",
    "dma_query": "smmu_forensics.analysis",
    "discover_registers": "smmu_forensics.analysis",
    "Registers": "smmu_forensics.smmu.registers",
    "load_register_file": "smmu_forensics.smmu.registers",
    "Decision": "smmu_forensics.rules.base",
    "Severity": "smmu_forensics.rules.findings",
    "DrgnMemory": "smmu_forensics.dumps.drgnmem",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'smmu_forensics' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

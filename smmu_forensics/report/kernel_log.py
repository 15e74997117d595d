"""The kernel log, rendered as ``dmesg`` prints it (text) or as data (JSON).

Every line is text from a crashed, maybe hostile machine: control characters and newlines are
escaped, so one record is one line and no record can forge another.

>>> from smmu_forensics.discover.printk import KernelLog, LogRecord
>>> print(text(KernelLog([LogRecord(7, 4937587512, "arm-smmu-v3 9050000.smmuv3: ias 44-bit\\n[ 0.0] forged")])), end="")
[    4.937587] arm-smmu-v3 9050000.smmuv3: ias 44-bit\\n[ 0.0] forged
"""

from __future__ import annotations

from typing import Any

from smmu_forensics.discover.printk import KernelLog
from smmu_forensics.report.escape import clean

__all__ = ["text", "model"]


def _stamp(ts_nsec: int) -> str:
    """The kernel's own ``[%5lu.%06lu]``: seconds, then microseconds truncated (not rounded)."""
    return f"[{ts_nsec // 1_000_000_000:5d}.{ts_nsec % 1_000_000_000 // 1000:06d}]"


def text(log: KernelLog) -> str:
    return "".join(f"{_stamp(r.ts_nsec)} {clean(r.text)}\n" for r in log.records)


def model(log: KernelLog) -> dict[str, Any]:
    return {
        "source": log.source,
        "skipped": log.skipped,
        "records": [{"seq": r.seq, "ts_nsec": r.ts_nsec, "text": r.text, "subsystem": r.subsystem, "device": r.device}
                    for r in log.records],
    }

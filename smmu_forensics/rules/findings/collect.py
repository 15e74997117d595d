"""Findings: typed severities, and a collector that bounds how many of one kind are listed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Severity", "Finding", "Collector", "MAX_PER_KIND"]

MAX_PER_KIND = 32  # findings of one id listed before "and N more"


class Severity(str, Enum):
    """From worst to mildest; ``--fail-on`` gates on a severity and everything worse.

    >>> Severity.ERROR.at_least(Severity.WARNING), Severity.INFO.at_least(Severity.WARNING)
    (True, False)
    """

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    def at_least(self, other: Severity) -> bool:
        """As bad as ``other`` or worse."""
        return self.rank <= other.rank


@dataclass
class Finding:
    id: str
    severity: Severity
    where: str
    message: str


class Collector:
    """Findings as they are found: duplicates dropped, at most MAX_PER_KIND of one id listed."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._count: dict[str, int] = {}
        self._seen: set[tuple[str, str, str]] = set()
        self.uncounted: set[str] = set()  # kinds whose further findings were not even counted

    def add(self, fid: str, sev: Severity, where: str, msg: str) -> None:
        key = (fid, where, msg)
        if key in self._seen:
            return
        self._seen.add(key)
        n = self._count.get(fid, 0) + 1
        self._count[fid] = n
        if n <= MAX_PER_KIND:
            self.items.append(Finding(fid, sev, where, msg))

    def full(self, fid: str) -> bool:
        return self._count.get(fid, 0) >= MAX_PER_KIND

    def close(self) -> list[Finding]:
        """The findings, worst first, with one "and N more" line per kind that overflowed."""
        for fid, n in self._count.items():
            if n > MAX_PER_KIND or fid in self.uncounted:
                sev = next(f.severity for f in self.items if f.id == fid)
                more = "more (not counted)" if fid in self.uncounted else str(n - MAX_PER_KIND) + " more"
                self.items.append(Finding(fid, sev, "-", f"... and {more} {fid} findings"))
        return sorted(self.items, key=lambda f: f.severity.rank)

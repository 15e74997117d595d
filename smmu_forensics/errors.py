"""Typed errors and the documented exit codes.

Every error that can reach the user carries one line of text and an exit code; the CLI prints
``smmu-forensics: <line>`` on stderr and exits with the code.  No traceback reaches the user.

Exit codes (documented in README.md):

====  =====================================================================
0     every SMMU's table would be adopted under the selected rulesets
1     some table rejected or not adoptable
2     usage error (bad option, bad register file, bad address)
3     dump unreadable (unknown format, truncated header, corrupt metadata)
4     verdict unknown for lack of memory or registers
5     internal error (a bug: please report it with the command line)
====  =====================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_UNKNOWN = 4
EXIT_INTERNAL = 5


class ForensicsError(Exception):
    """Base class: a one-line message and an exit code."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ForensicsError):
    """The user asked for something malformed (a register file, an address, an option)."""

    exit_code = EXIT_USAGE


class DumpError(ForensicsError):
    """The dump cannot be read: wrong magic, lying header, truncated metadata."""

    exit_code = EXIT_UNREADABLE

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class UnknownFormat(DumpError):
    """No layer recognises the file's header (it may be a raw dump: see ``PATH@BASE``)."""


class CorruptPage(ForensicsError):
    """One page's stored data is corrupt (bad compression, wrong size)."""

    exit_code = EXIT_UNREADABLE

"""Run ``smmu-forensics inspect`` inside drgn, over drgn's own memory reader.

As a drgn script (``prog`` is drgn's program; no debug info is needed, VMCOREINFO is enough)::

    drgn -c vmcore "$(python3 -c 'import smmu_forensics.drgn_inspect as m; print(m.__file__)')" --format markdown
    sudo drgn "$(python3 -c ...)"                       # the live kernel

or from an interactive drgn session: ``from smmu_forensics import inspect; print(inspect(prog))``.
Options: ``--regs FILE``, ``--rules NAME`` (repeatable), ``--all``, ``--sid N``, ``--format
text|markdown|json``.  Exits as ``smmu-forensics inspect`` does (README's table).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["main"]


def main(prog: Any, argv: list[str]) -> int:
    """Inspect ``prog`` (a ``drgn.Program``) as the command line asks; print; return the exit code."""
    from smmu_forensics.api import inspect

    ap = argparse.ArgumentParser(prog="drgn_inspect.py", description=__doc__.split("\n")[0])
    ap.add_argument("--regs", help="register JSON or MMIO page (default: found in the dump)")
    ap.add_argument("--rules", action="append", default=[], help="ruleset (repeatable; default latest and v6; all)")
    ap.add_argument("--all", action="store_true", help="every STE and every DMA mapping")
    ap.add_argument("--sid", type=lambda s: int(s, 0), help="decode one StreamID fully")
    ap.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    ns = ap.parse_args(argv)
    r = inspect(prog, ns.regs, ns.rules, ns.all, ns.sid)
    sys.stdout.write(r.json() if ns.format == "json" else r.markdown() if ns.format == "markdown" else r.text(120))
    return r.exit_code


if __name__ == "__main__" and "prog" in globals():  # run by drgn as a script
    sys.exit(main(globals()["prog"], sys.argv[1:]))

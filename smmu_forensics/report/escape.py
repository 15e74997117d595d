"""Escaping text that came from a dump (or a register file) before it reaches a terminal,
Rich markup or Markdown.  A compromised machine can plant escape sequences in VMCOREINFO,
utsname or file names; none of them may reach the reader's terminal or a bug tracker unescaped.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r"}  # a tab stays a tab (the kernel log has them; it forges nothing)
# inline Markdown: emphasis, code, links, HTML, table pipes, strike-through, entities
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~&])")


def clean(text: object) -> str:
    """One line of printable text: control characters (ESC, bidi overrides ...) become \\xNN
    escapes and line breaks ``\\n`` (tabs stay), so a hostile name cannot print a line of its own.

    >>> print(clean("smmu0\\nexit code 0\\x1b[2J\\u202e"))
    smmu0\\nexit code 0\\x1b[2J\\u202e
    """
    s = str(text)
    return _CONTROL.sub(lambda m: _NAMED.get(m.group()) or (f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                                                              else f"\\u{ord(m.group()):04x}"), s)


def md(text: object) -> str:
    """Text safe inside Markdown (also in a table cell)."""
    out = _MD_SPECIAL.sub(r"\\\1", clean(text)).replace("\n", " ")
    return "\\" + out if out[:1] in ("#", "+", "-", "=") else out


def markup(text: object) -> str:
    """Text safe inside Rich markup."""
    from rich.markup import escape

    return escape(clean(text))

"""JSON output: the model serialised, STE listings streamed chunk by chunk.

No sentinel strings: the writer walks the model's outer containers (report, SMMUs, tables) and
writes every value through :func:`json.dumps`; a :class:`~.model.Listing` (STEs, L1 descriptors, L1 results) met there is
written element by element, so ``--all`` on a table of a million STEs never holds them all.
Indented on a terminal (the listing materialised: a terminal reader wants it small anyway),
compact (the C encoder) into a pipe or a file.

>>> import io
>>> buf = io.StringIO()
>>> write({"name": "\\u0000stes0\\u0000", "n": [1, 2]}, buf, pretty=False)
>>> buf.getvalue()
'{"name":"\\\\u0000stes0\\\\u0000","n":[1,2]}\\n'
"""

from __future__ import annotations

import json
from typing import IO, Any

from smmu_forensics.report.model import Listing

__all__ = ["write"]

_COMPACT: dict[str, Any] = {"separators": (",", ":")}
STREAM_DEPTH = 5  # report -> smmus -> smmu -> verdicts -> ruleset (its l1 listing): deeper values are plain JSON
STREAM_LIST = 256  # longer lists (ranges, findings) are one json.dumps call: the listings sit in short ones (smmus)


def _listed(x: Any) -> Any:
    """json.dumps' fallback: a Listing met inside a plain value (or anywhere when indented) is written
    as a list, correct but not streamed."""
    if isinstance(x, Listing):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _stream(x: Any, out: IO[str], depth: int) -> None:
    if isinstance(x, Listing):
        out.write("[")
        first = True
        for chunk in x.chunks():
            if chunk:
                out.write(("" if first else ",") + json.dumps(chunk, **_COMPACT)[1:-1])
                first = False
        out.write("]")
    elif depth < STREAM_DEPTH and isinstance(x, dict):
        out.write("{")
        for i, (k, v) in enumerate(x.items()):
            out.write(("," if i else "") + json.dumps(str(k)) + ":")
            _stream(v, out, depth + 1)
        out.write("}")
    elif depth < STREAM_DEPTH and isinstance(x, list) and len(x) <= STREAM_LIST:
        out.write("[")
        for i, v in enumerate(x):
            if i:
                out.write(",")
            _stream(v, out, depth + 1)
        out.write("]")
    else:
        out.write(json.dumps(x, default=_listed, **_COMPACT))


def write(obj: Any, out: IO[str], pretty: bool) -> None:
    """Write ``obj`` as JSON and a newline: indented when ``pretty``, else compact and streamed."""
    if pretty:
        out.write(json.dumps(obj, indent=1, default=_listed) + "\n")
    else:
        _stream(obj, out, 0)
        out.write("\n")

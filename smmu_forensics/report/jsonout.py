"""JSON output: the model serialised, STE listings streamed chunk by chunk.

No sentinel strings: the writer walks the model's outer containers (report, SMMUs, tables) and
writes every value through :func:`json.dumps`; a :class:`~.model.SteListing` met there is
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

from smmu_forensics.report.model import SteListing

__all__ = ["write"]

_COMPACT: dict[str, Any] = {"separators": (",", ":")}
STREAM_DEPTH = 4  # report -> smmus -> smmu -> table: deeper values are plain JSON


def _materialise(x: Any, depth: int = 0) -> Any:
    if isinstance(x, SteListing):
        return list(x)
    if depth < STREAM_DEPTH and isinstance(x, dict):
        return {k: _materialise(v, depth + 1) for k, v in x.items()}
    if depth < STREAM_DEPTH and isinstance(x, list):
        return [_materialise(v, depth + 1) for v in x]
    return x


def _stream(x: Any, out: IO[str], depth: int) -> None:
    if isinstance(x, SteListing):
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
    elif depth < STREAM_DEPTH and isinstance(x, list):
        out.write("[")
        for i, v in enumerate(x):
            if i:
                out.write(",")
            _stream(v, out, depth + 1)
        out.write("]")
    else:
        out.write(json.dumps(x, **_COMPACT))


def write(obj: Any, out: IO[str], pretty: bool) -> None:
    """Write ``obj`` as JSON and a newline: indented when ``pretty``, else compact and streamed."""
    if pretty:
        out.write(json.dumps(_materialise(obj), indent=1) + "\n")
    else:
        _stream(obj, out, 0)
        out.write("\n")

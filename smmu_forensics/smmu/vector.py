"""numpy decoders generated from :mod:`.fields`, for whole tables at once.

``decode(fields.STE, words)`` with ``words`` an ``(N, 8)`` uint64 array returns ``{name: array}``
for the requested fields; a property test holds it equal to the Construct path.

    >>> import numpy as np
    >>> from smmu_forensics.smmu import fields
    >>> w = np.array([[0x431cd00b, 0xd6, 0, 0, 0, 0, 0, 0]], dtype=np.uint64)
    >>> int(decode(fields.STE, w, ["CONFIG"])["CONFIG"][0])
    5
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from smmu_forensics.smmu.fields import Layout


def as_words(raw: bytes | memoryview, layout: Layout) -> np.ndarray:
    """View raw little-endian bytes as an ``(N, words)`` uint64 array (copy-free when possible)."""
    n = len(raw) // layout.size
    arr = np.frombuffer(raw, dtype="<u8", count=n * layout.words)
    return arr.reshape(n, layout.words)


def field(layout: Layout, words: np.ndarray, name: str) -> np.ndarray:
    f = layout.field(name)
    col = words[:, f.word] if words.ndim == 2 else words
    v = (col >> np.uint64(f.lo)) & np.uint64((1 << f.width) - 1)
    return v << np.uint64(f.lo) if f.addr else v


def decode(layout: Layout, words: np.ndarray, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    names = [f.name for f in layout.fields] if names is None else list(names)
    return {n: field(layout, words, n) for n in names}

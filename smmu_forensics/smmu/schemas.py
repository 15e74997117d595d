"""Construct schemas generated from :mod:`.fields`: one definition that parses and builds.

Each 64-bit (or 32-bit) little-endian word is a ``ByteSwapped(BitStruct(...))`` whose members run
from the top bit down; address fields keep their bit positions through an adapter.

    >>> parse(fields.STRTAB_BASE_CFG, (0x10210).to_bytes(4, "little"))["LOG2SIZE"]
    16
    >>> build(fields.L1STD, {"SPAN": 9, "L2PTR": 0x7ac60000}).hex()
    '0900c67a00000000'
"""

from __future__ import annotations

from functools import cache
from typing import Any

from construct import BitsInteger, BitStruct, ByteSwapped, Construct, ExprAdapter, Struct

from smmu_forensics.smmu import fields
from smmu_forensics.smmu.fields import Field, Layout


def _member(f: Field) -> Construct:
    base = BitsInteger(f.width)
    if f.addr:
        lo = f.lo
        base = ExprAdapter(base, decoder=lambda obj, ctx, lo=lo: obj << lo, encoder=lambda obj, ctx, lo=lo: obj >> lo)
    return f.name / base


@cache
def schema(layout: Layout) -> Construct:
    """The Construct schema of a layout (cached)."""
    word_bits = 32 if layout.size == 4 else 64
    words = []
    for w in range(layout.words):
        members = [_member(f) for f in sorted((f for f in layout.fields if f.word == w), key=lambda f: -f.hi)]
        assert sum(f.width for f in layout.fields if f.word == w) == word_bits
        words.append(f"w{w}" / ByteSwapped(BitStruct(*members)))
    return Struct(*words)


def parse(layout: Layout, raw: bytes) -> dict[str, int]:
    """Every field (reserved ones included) of ``raw`` as a flat dict."""
    c = schema(layout).parse(raw)
    out: dict[str, int] = {}
    for w in range(layout.words):
        for k, v in c[f"w{w}"].items():
            if not k.startswith("_"):
                out[k] = int(v)
    return out


def build(layout: Layout, values: dict[str, Any]) -> bytes:
    """Bytes of a layout from field values (missing fields are 0; unknown names are an error)."""
    known = {f.name for f in layout.fields}
    unknown = set(values) - known
    if unknown:
        raise KeyError(f"{layout.name} has no field(s) {sorted(unknown)}")
    data: dict[str, dict[str, int]] = {f"w{w}": {} for w in range(layout.words)}
    for f in layout.fields:
        v = int(values.get(f.name, 0))
        if v & ~(f.mask >> (0 if f.addr else f.lo)) if not f.addr else v & ~f.mask:
            raise ValueError(f"{layout.name}.{f.name}={v:#x} does not fit bits [{f.hi}:{f.lo}]")
        data[f"w{f.word}"][f.name] = v
    return schema(layout).build(data)


def parse_word(layout: Layout, value: int) -> dict[str, int]:
    """Decode a register value (int) through the schema."""
    return parse(layout, value.to_bytes(layout.size if layout.size < 8 else 8, "little"))


__all__ = ["schema", "parse", "build", "parse_word", "fields"]

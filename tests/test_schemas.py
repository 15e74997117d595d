"""Bit layouts: Construct parse/build round-trips, the numpy path equals the Construct path,
and raw values from the real capture decode to the documented fields."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smmu_forensics.smmu import fields as L
from smmu_forensics.smmu import lpae, schemas, vector

LAYOUTS = [*L.LAYOUTS.values(), lpae.LPAE_S1, lpae.LPAE_S2]  # every declared layout, the LPAE descriptors too


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LAYOUTS), st.data())
def test_parse_build_roundtrip(layout, data):
    raw = data.draw(st.binary(min_size=layout.size, max_size=layout.size))
    assert schemas.build(layout, schemas.parse(layout, raw)) == raw


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(LAYOUTS), st.data())
def test_build_parse_roundtrip(layout, data):
    values = {}
    for f in layout.fields:
        v = data.draw(st.integers(0, (1 << f.width) - 1))
        values[f.name] = v << f.lo if f.addr else v
    assert schemas.parse(layout, schemas.build(layout, values)) == values


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([L.STE, L.CD, L.L1STD, L.L1CD, L.STRTAB_BASE]), st.lists(st.binary(min_size=64, max_size=64), min_size=1, max_size=8))
def test_vector_equals_construct(layout, blobs):
    raw = b"".join(b[: layout.size] for b in blobs)
    words = vector.as_words(raw, layout)
    fast = vector.decode(layout, words)
    for i in range(len(blobs)):
        slow = schemas.parse(layout, raw[i * layout.size : (i + 1) * layout.size])
        for name, col in fast.items():
            assert int(col[i]) == slow[name], (layout.name, name)


def test_every_word_fully_covered():
    for lay in LAYOUTS:
        bits = 32 if lay.size == 4 else 64
        for w in range(lay.words):
            assert sum(f.width for f in lay.fields if f.word == w) == bits


def test_real_values_decode_to_documented_fields():
    # registers.json of the capture, and what ../shared/captures/README.md says they mean
    cfg = schemas.parse_word(L.STRTAB_BASE_CFG, 0x10210)
    assert (cfg["FMT"], cfg["SPLIT"], cfg["LOG2SIZE"]) == (1, 8, 16)
    base = schemas.parse_word(L.STRTAB_BASE, 0x40000000431BE000)
    assert (base["ADDR"], base["RA"]) == (0x431BE000, 1)
    idr0 = schemas.parse_word(L.IDR0, 0x0D40101A)
    assert (idr0["ST_LEVEL"], idr0["COHACC"], idr0["S1P"], idr0["S2P"], idr0["TTF"], idr0["ASID16"]) == (1, 1, 1, 0, 2, 1)
    assert schemas.parse_word(L.IDR1, 0x02730010)["SIDSIZE"] == 16
    assert schemas.parse_word(L.CR0, 0xD)["SMMUEN"] == 1
    l1 = schemas.parse(L.L1STD, (0x7AC60009).to_bytes(8, "little"))
    assert (l1["SPAN"], l1["L2PTR"]) == (9, 0x7AC60000)


def test_real_ste_and_cd_decode_like_ground_truth():
    # SID 0x8 of the capture (ground_truth.json "decoded")
    ste = bytes.fromhex("0bd01c4300000000d6" + "00" * 55)
    d = schemas.parse(L.STE, ste)
    assert (d["V"], d["CONFIG"], d["S1FMT"], d["S1CONTEXTPTR"], d["S1CDMAX"]) == (1, 5, 0, 0x431CD000, 0)
    assert (d["S1DSS"], d["S1CIR"], d["S1COR"], d["S1CSH"], d["EATS"], d["STRW"], d["SHCFG"]) == (2, 1, 1, 3, 0, 0, 0)
    abort = schemas.parse(L.STE, bytes.fromhex("01" + "00" * 7 + "0000000000100000" + "00" * 48))
    assert (abort["V"], abort["CONFIG"], abort["SHCFG"]) == (1, 0, 1)
    cd = b"".join(q.to_bytes(8, "little") for q in (0x0002E204C0003510, 0x4820E000, 0, 0xFFFFFFFFF404FF44, 0, 0, 0, 0))
    c = schemas.parse(L.CD, cd)
    want = {"T0SZ": 16, "TG0": 0, "IR0": 1, "OR0": 1, "SH0": 3, "EPD0": 0, "ENDI": 0, "EPD1": 1, "V": 1, "IPS": 4, "AFFD": 0,
            "TBI0": 0, "AA64": 1, "R": 1, "A": 1, "ASET": 1, "ASID": 2, "TTB0": 0x4820E000, "MAIR0": 0xF404FF44}
    assert {k: c[k] for k in want} == want


def test_vector_on_array_of_stes():
    raw = bytes.fromhex("0bd01c4300000000d6" + "00" * 55) * 3
    w = vector.as_words(raw, L.STE)
    assert vector.field(L.STE, w, "CONFIG").tolist() == [5, 5, 5]
    assert vector.field(L.STE, w, "S1CONTEXTPTR").dtype == np.uint64


def test_build_rejects_values_that_do_not_fit():
    import pytest

    with pytest.raises(ValueError):
        schemas.build(L.L1STD, {"SPAN": 32})
    with pytest.raises(KeyError):
        schemas.build(L.L1STD, {"NOPE": 1})

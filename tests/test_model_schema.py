"""The report model is typed once (report/types.py): schema.json names exactly the same keys at
every level, and the reports the tool builds have exactly those keys."""

from __future__ import annotations

import io
import json
import typing
from pathlib import Path

import jsonschema
import pytest

from conftest import CARVED, SCENARIOS
from smmu_forensics.analysis import analyze, open_memory
from smmu_forensics.report import jsonout, model
from smmu_forensics.report import types as T
from smmu_forensics.smmu.registers import load_register_file

SCHEMA = json.loads((Path(model.__file__).parent / "schema.json").read_text())

#: TypedDict -> where its object is described in schema.json (a JSON pointer)
WHERE = {
    T.Report: "",
    T.DumpModel: "/properties/dump/anyOf/1",
    T.SmmuModel: "/$defs/smmu",
    T.Features: "/$defs/smmu/properties/features",
    T.DecodedRegister: "/$defs/smmu/properties/decoded_registers/additionalProperties",
    T.FieldShown: "/$defs/field",
    T.TableModel: "/$defs/table",
    T.L1Row: "/$defs/table/properties/l1/items",
    T.SteSummary: "/$defs/table/properties/ste_summary",
    T.SteRow: "/$defs/table/properties/stes/items",
    T.CdTableRow: "/$defs/table/properties/cd_tables/items",
    T.VerdictModel: "/$defs/verdict",
    T.L1VerdictRow: "/$defs/verdict/properties/l1/items",
    T.StepRow: "/$defs/verdict/properties/trail/items",
    T.FindingModel: "/$defs/smmu/properties/findings/items",
    T.DmaModel: "/$defs/smmu/properties/dma/items",
    T.PageTableRow: "/$defs/smmu/properties/dma/items/properties/tables/items",
    T.LeafRow: "/$defs/smmu/properties/dma/items/properties/leaves/items",
    T.RangeRow: "/$defs/smmu/properties/dma/items/properties/ranges/items",
    T.SidDetail: "/$defs/smmu/properties/sid_detail",
    T.SidCdTable: "/$defs/smmu/properties/sid_detail/properties/cd_table",
    T.L1CdRow: "/$defs/smmu/properties/sid_detail/properties/cd_table/properties/l1cd/items",
    T.CdRow: "/$defs/smmu/properties/sid_detail/properties/cd_table/properties/cds/items",
    T.HoleRow: "/$defs/smmu/properties/sid_detail/properties/cd_table/properties/holes/items",
    T.DiscoveryModel: "/$defs/smmu/properties/discovery",
    T.EvidenceRow: "/$defs/smmu/properties/discovery/properties/evidence/items",
}


def node(pointer: str) -> dict:
    n = SCHEMA
    for part in pointer.split("/")[1:]:
        n = n[int(part)] if isinstance(n, list) else n[part.replace("~1", "/").replace("~0", "~")]
    return n


def keys(td: type) -> set[str]:
    return set(td.__required_keys__) | set(td.__optional_keys__)  # type: ignore[attr-defined]


def test_every_typed_dict_is_placed():
    typed = {v for v in vars(T).values() if isinstance(v, type) and typing.is_typeddict(v) and not v.__name__.startswith("_")}
    assert typed == set(WHERE)


@pytest.mark.parametrize("td", list(WHERE), ids=lambda t: t.__name__)
def test_schema_names_the_same_keys(td):
    n = node(WHERE[td])
    assert set(n.get("properties", {})) == keys(td)
    assert set(n.get("required", [])) <= set(td.__required_keys__), "schema requires a key the model may leave out"


def _check(obj: dict, td: type, where: str) -> None:
    assert set(obj) <= keys(td), (where, set(obj) - keys(td))
    assert set(td.__required_keys__) <= set(obj), (where, set(td.__required_keys__) - set(obj))  # type: ignore[attr-defined]
    hints = typing.get_type_hints(td)
    for k, v in obj.items():
        for sub in _typed_dicts(hints[k]):
            if isinstance(v, dict) and typing.get_origin(hints[k]) is not dict:
                _check(v, sub, f"{where}.{k}")
            elif isinstance(v, dict):
                for kk, vv in v.items():
                    _check(vv, sub, f"{where}.{k}[{kk}]")
            elif not isinstance(v, (str, bytes)):
                for i, vv in enumerate(list(v)[:50] if v is not None else []):
                    if isinstance(vv, dict):
                        _check(vv, sub, f"{where}.{k}[{i}]")


def _typed_dicts(hint: object) -> list[type]:
    if isinstance(hint, type) and typing.is_typeddict(hint):
        return [hint]
    return [t for a in typing.get_args(hint) for t in _typed_dicts(a)]


@pytest.mark.parametrize("scenario", [None, "two-smmus", "scan-vmid", "l2-excluded", "scan-l1cd-null"])
def test_reports_have_exactly_the_typed_keys(scenario, tmp_path):
    if scenario is None:
        dump, regs_file = str(CARVED), str(CARVED) + ".smmu.json"
    else:
        from smmu_forensics.synth.scenario import build_scenario, load, write_outputs

        dump = str(tmp_path / "d.elf")
        write_outputs(build_scenario(load(str(SCENARIOS / f"{scenario}.yaml"))), dump, "elf")
        regs_file = dump + ".smmu.json"
    with open_memory(dump) as mem:
        a = analyze(mem, load_register_file(regs_file), ["latest", "v7", "v6"])
    for sid in (None, 0x8, 0x100, 0x5000):
        rep = model.build(a, list_all=sid is None, sid=sid)
        _check(dict(rep), T.Report, "report")
        buf = io.StringIO()
        jsonout.write(rep, buf, pretty=False)
        jsonschema.validate(json.loads(buf.getvalue()), SCHEMA)

"""``smmu-forensics synth SCENARIO -o OUT --format FMT``."""

from __future__ import annotations

import os
import sys

import click

from smmu_forensics.errors import UsageError
from smmu_forensics.synth.writers import FORMATS


def _spec(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """--spec: print the scenario format (shipped in the package, so it works from a wheel)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.resources import files

    sys.stdout.write(files("smmu_forensics.synth").joinpath("scenarios.md").read_text(encoding="utf-8"))
    ctx.exit(0)


@click.command()
@click.option("--spec", is_flag=True, expose_value=False, is_eager=True, callback=_spec,
              help="print the scenario file format (keys, corruptions, expectations) and exit")
@click.argument("scenario")
@click.option("-o", "--output", "out", required=True, metavar="OUT", help="dump file to write (plus OUT.smmu.json, OUT.expected.json)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="elf", show_default=True)
@click.option("--dump-level", type=click.IntRange(0, 31), default=None, help="makedumpfile -d level recorded (default: the scenario's, or 1)")
def synth(scenario: str, out: str, fmt: str, dump_level: int | None) -> None:
    """Build a dump from a scenario file (YAML or TOML; the format: `synth --spec`)."""
    from smmu_forensics.synth.scenario import build_scenario, load, write_outputs

    if os.path.isdir(out) or out.endswith(os.sep):
        raise UsageError(f"{out}: -o names the dump file to write, not a folder")
    parent = os.path.dirname(out) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"{out}: folder {parent} does not exist")
    built = build_scenario(load(scenario))
    if dump_level is not None:
        built.dump_level = dump_level
    try:
        written = write_outputs(built, out, fmt)
    except OSError as exc:
        raise UsageError(f"{exc.filename or out}: cannot write: {exc.strerror}") from None
    for p in written:
        sys.stdout.write(p + "\n")

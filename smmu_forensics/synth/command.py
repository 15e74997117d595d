"""``smmu-forensics synth SCENARIO -o OUT --format FMT``."""

from __future__ import annotations

import sys

import click

from smmu_forensics.synth.writers import FORMATS


@click.command()
@click.argument("scenario")
@click.option("-o", "--output", "out", required=True, metavar="OUT", help="dump file to write (plus OUT.smmu.json, OUT.expected.json)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="elf", show_default=True)
@click.option("--dump-level", type=click.IntRange(0, 31), default=None, help="makedumpfile -d level recorded (default: the scenario's, or 1)")
def synth(scenario: str, out: str, fmt: str, dump_level: int | None) -> None:
    """Build a dump from a scenario file (YAML or TOML; see docs/scenarios.md)."""
    from smmu_forensics.synth.scenario import build_scenario, load, write_outputs

    built = build_scenario(load(scenario))
    if dump_level is not None:
        built.dump_level = dump_level
    for p in write_outputs(built, out, fmt):
        sys.stdout.write(p + "\n")

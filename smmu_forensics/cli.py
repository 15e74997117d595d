"""The command line: options, wiring and exit codes; no decoding or judging happens here.

Commands: ``info``, ``xp``, ``inspect``, ``regs``, ``synth``.  Exit codes are in
:mod:`smmu_forensics.errors` and README.md.  No traceback reaches the user: a known error is
one line on stderr; an unexpected one is one line too (``SMMU_FORENSICS_DEBUG=1`` shows it).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from smmu_forensics import __version__
from smmu_forensics.errors import EXIT_INTERNAL, EXIT_UNKNOWN, EXIT_UNREADABLE, EXIT_USAGE, ForensicsError, UsageError

RULESET_CHOICES = ("v6", "v7", "latest", "all")


def _progress() -> Callable[[str, int, int], None] | None:
    """A Rich progress bar on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    state: dict[str, Any] = {}

    def cb(label: str, done: int, total: int) -> None:
        first = state.setdefault("t0", time.monotonic())
        if "p" not in state and (done >= total or time.monotonic() - first < 1.0):
            if done >= total:
                state.clear()  # the next step times itself afresh
            return  # only work that takes over a second shows a bar
        if "p" not in state:
            p = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                         console=Console(stderr=True), transient=True)
            p.start()
            state["p"], state["tasks"] = p, {}
        p, tasks = state["p"], state["tasks"]
        if label not in tasks:
            tasks[label] = p.add_task(label, total=max(total, 1))
        p.update(tasks[label], completed=done, total=max(total, 1))
        if done >= total:
            p.stop()
            state.clear()

    return cb


def _console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    no_color = bool(os.environ.get("NO_COLOR"))
    return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=False,
                   width=None if sys.stdout.isatty() else 160)


def _open(dump: str, raw_base: str | None):  # type: ignore[no-untyped-def]
    """Open a dump; a headerless file whose sidecar records ``raw_base`` opens as raw memory there."""
    from smmu_forensics.dumps.sniff import open_dump, parse_int
    from smmu_forensics.errors import DumpError
    from smmu_forensics.smmu.registers import find_sidecar

    base = parse_int(raw_base, "--raw-base") if raw_base is not None else None
    try:
        return open_dump(dump, raw_base=base, progress=_progress())
    except DumpError as exc:
        side = find_sidecar(dump) if base is None and "unknown dump format" in exc.problem else None
        if side is None:
            raise
        try:
            with open(side) as f:
                side_base = json.load(f).get("raw_base")
        except (OSError, ValueError, AttributeError):
            raise exc from None
        if side_base is None:
            raise
        return open_dump(dump, raw_base=parse_int(str(side_base), f"raw_base in {side}"), progress=_progress())


def _emit_json(obj: Any) -> None:
    """Indented for a terminal; compact (the C encoder, several times faster) into a pipe or file.

    STE listings (report.model.SteListing) are streamed chunk by chunk, so the output of
    ``--all`` on a huge table is written without holding it in memory.
    """
    from smmu_forensics.report.model import SteListing

    kw: dict[str, Any] = {"indent": 1} if sys.stdout.isatty() else {"separators": (",", ":")}
    lazy: list[SteListing] = []
    for s in obj.get("smmus", []) if isinstance(obj, dict) else []:
        stes = s.get("table", {}).get("stes")
        if isinstance(stes, SteListing):
            s["table"]["stes"] = f"\x00stes{len(lazy)}\x00"
            lazy.append(stes)
    text = json.dumps(obj, **kw)
    for i, listing in enumerate(lazy):
        head, _, text = text.partition(json.dumps(f"\x00stes{i}\x00"))
        sys.stdout.write(head + "[")
        first = True
        for chunk in listing.chunks():
            if chunk:
                sys.stdout.write(("" if first else ",") + ",".join(json.dumps(e, **kw) for e in chunk))
                first = False
        sys.stdout.write("]")
    sys.stdout.write(text + "\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smmu-forensics")
def cli() -> None:
    """ARM SMMUv3 stream tables in Linux crash dumps.

    \b
    Exit codes: 0 every table adopted; 1 some table rejected or not adoptable;
    2 usage error; 3 dump unreadable; 4 verdict unknown (memory or registers missing);
    5 internal error.
    """


# -- info ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("dump")
@click.option("--raw-base", metavar="ADDR", help="the dump is raw physical memory starting at ADDR (same as DUMP@ADDR)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def info(dump: str, raw_base: str | None, fmt: str) -> None:
    """Format, codec, page size, ranges, page counts, incomplete flag, VMCOREINFO highlights."""
    with _open(dump, raw_base) as mem:
        inf = mem.info()
    model = {
        "path": inf.path,
        "format": inf.format,
        "codec": inf.codec,
        "page_size": inf.page_size,
        "ranges": [{"start": f"{r.start:#x}", "end": f"{r.end:#x}", "size": r.size, "state": r.state.value} for r in inf.ranges],
        "pages": inf.pages,
        "incomplete": inf.incomplete,
        "incomplete_reasons": inf.incomplete_reasons,
        "vmcoreinfo": {k: inf.vmcoreinfo[k] for k in _VMCI if k in inf.vmcoreinfo},
        "notes": inf.notes,
        "details": inf.details,
    }
    if fmt == "json":
        _emit_json(model)
    else:
        from smmu_forensics.report.terminal import render_info

        render_info(model, _console())


from smmu_forensics.dumps.base import VMCOREINFO_HIGHLIGHTS as _VMCI  # noqa: E402


# -- xp ------------------------------------------------------------------------------------------
@cli.command()
@click.argument("dump")
@click.argument("addr")
@click.option("--len", "length", default="64", show_default=True, help="bytes to show (at most 16 MiB)")
@click.option("--raw-base", metavar="ADDR", help="the dump is raw physical memory starting at ADDR")
@click.option("--format", "fmt", type=click.Choice(["hex", "json", "raw"]), default="hex", show_default=True)
def xp(dump: str, addr: str, length: str, raw_base: str | None, fmt: str) -> None:
    """Physical memory at ADDR as hex and ASCII (like crash's `rd -p`).

    Bytes the dump lacks are shown as `??` and listed; the exit code is then 4.
    """
    from smmu_forensics.dumps.sniff import parse_int

    a = parse_int(addr, "address")
    n = parse_int(length, "--len")
    if n > 16 << 20:
        raise UsageError("--len is limited to 16 MiB")
    with _open(dump, raw_base) as mem:
        r = mem.read_partial(a, n)
    holes = [{"start": f"{h.start:#x}", "end": f"{h.end:#x}", "state": h.state.value, "reason": h.reason} for h in r.holes]
    if fmt == "raw":
        if r.holes:
            h = r.holes[0]
            raise _Missing(f"physical {h.start:#x}-{h.end:#x} is {h.state.value} in the dump ({h.reason}); no bytes written")
        sys.stdout.buffer.write(r.data)
        sys.stdout.flush()
        return
    if fmt == "json":
        _emit_json({"addr": f"{a:#x}", "len": n, "hex": r.data.hex() if not r.holes else None,
                    "hex_with_holes": _hex_holes(r), "holes": holes})
    else:
        out = sys.stdout
        for off in range(0, n, 16):
            line = r.data[off : off + 16]
            cells, text = [], []
            for i, b in enumerate(line):
                if r.missing(a + off + i, 1):
                    cells.append("??")
                    text.append("?")
                else:
                    cells.append(f"{b:02x}")
                    text.append(chr(b) if 32 <= b < 127 else ".")
            out.write(f"{a + off:016x}:  {' '.join(cells[:8]):<23}  {' '.join(cells[8:]):<23}  {''.join(text)}\n")
        for h in holes:
            out.write(f"missing: {h['start']}-{h['end']} {h['state']} ({h['reason']})\n")
    if r.holes:
        sys.exit(EXIT_UNKNOWN)


def _hex_holes(r) -> str:  # type: ignore[no-untyped-def]
    return "".join("??" if r.missing(r.addr + i, 1) else f"{b:02x}" for i, b in enumerate(r.data)) if r.holes else r.data.hex()


class _Missing(ForensicsError):
    exit_code = EXIT_UNKNOWN


# -- register options shared by inspect and regs -------------------------------------------------
_REG_FLAGS = ("idr0", "idr1", "idr3", "idr5", "cr0", "cr0ack", "gbpa", "gerror", "gerrorn", "strtab_base", "strtab_base_cfg")


def _reg_options(f: Callable) -> Callable:
    for name in reversed(_REG_FLAGS):
        f = click.option(f"--{name.replace('_', '-')}", name, metavar="VALUE", help=f"{name.upper()} register value")(f)
    f = click.option("--smmu-base", metavar="ADDR", help="MMIO base of the SMMU (names it in messages)")(f)
    f = click.option("--coherent/--no-coherent", "coherent", default=None,
                     help="firmware's coherency (DT dma-coherent / IORT); default IDR0.COHACC")(f)
    f = click.option("--regs", "regs_files", multiple=True, metavar="FILE",
                     help="register JSON (flat or {\"smmus\": [...]}) or a raw 4/64 KiB MMIO page")(f)
    f = click.option("--rules", "rules", type=click.Choice(RULESET_CHOICES), multiple=True,
                     help="rulesets to replay (repeatable; default: latest and v6)")(f)
    return f


def _gather_regs(dump: str | None, regs_files: tuple[str, ...], flags: dict[str, str | None], smmu_base: str | None,
                 coherent: bool | None):  # type: ignore[no-untyped-def]
    from smmu_forensics.smmu.registers import Registers, find_sidecar, load_register_file

    smmus = []
    files = list(regs_files)
    if not files and dump is not None:
        side = find_sidecar(dump)
        if side:
            files.append(side)
    for f in files:
        smmus += load_register_file(f)
    given = {k: v for k, v in flags.items() if v is not None}
    over = None
    if given or smmu_base is not None or coherent is not None:
        m: dict[str, Any] = dict(given)
        if smmu_base is not None:
            m["base"] = smmu_base
        over = Registers.from_mapping(m, "command line")
        if coherent is not None:
            over.coherent_override, over.coherent_source = coherent, f"--{'' if coherent else 'no-'}coherent"
        if smmu_base is None:
            over.base = None
    if over is not None:
        if len(smmus) > 1:
            raise UsageError("register flags apply to one SMMU, but the register file describes several")
        smmus = [smmus[0].merged(over)] if smmus else [over]
        if not files:
            smmus[0].name = f"smmu@{smmus[0].base:#x}" if smmus[0].base is not None else "smmu0"
    return smmus


def _rulesets(rules: tuple[str, ...]) -> list[str]:
    from smmu_forensics.rules.versions import DEFAULT, VERSIONS

    if not rules:
        return list(DEFAULT)
    if "all" in rules:
        return list(VERSIONS)
    return list(dict.fromkeys(rules))


NEED_REGS = """no SMMU register values given: MMIO registers are not part of a RAM dump.
Give them one of these ways:
  --regs registers.json          JSON: {"strtab_base": "0x...", "strtab_base_cfg": "0x...", "idr0": ..., "idr1": ..., "cr0": ...}
  DUMP.smmu.json beside the dump  the same JSON, found automatically
  --strtab-base 0x... --strtab-base-cfg 0x... --idr0 0x... --idr1 0x... --cr0 0x...
  --regs page0.bin               a raw 4 KiB or 64 KiB read of the SMMU's MMIO page 0
On a live or kdump system: devmem <smmu_base+0x80> 64, <+0x88>, <+0x0>, <+0x4>, <+0x20>, or QEMU's `xp`.
"""


def _render(report: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        _emit_json(report)
    elif fmt == "markdown":
        from smmu_forensics.report import markdown

        sys.stdout.write(markdown.render(report))
    else:
        from smmu_forensics.report import terminal

        terminal.render(report, _console())


# -- inspect -------------------------------------------------------------------------------------
@cli.command()
@click.argument("dump")
@_reg_options
@click.option("--raw-base", metavar="ADDR", help="the dump is raw physical memory starting at ADDR")
@click.option("--all", "list_all", is_flag=True, help="list every STE walked, not only the valid non-abort ones")
@click.option("--sid", metavar="N", help="decode one StreamID fully, with its context descriptors")
@click.option("--max-stes", type=click.IntRange(1, 1 << 24), default=None, help="walk at most N STEs (default 2097152)")
@click.option("--fail-on", type=click.Choice(["critical", "error", "warning"]), default=None,
              help="also exit 1 when a finding of this severity or worse is reported (for CI gates)")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def inspect(dump: str, regs_files: tuple[str, ...], rules: tuple[str, ...], coherent: bool | None, smmu_base: str | None,
            raw_base: str | None, list_all: bool, sid: str | None, max_stes: int | None, fail_on: str | None, fmt: str,
            **flags: str | None) -> None:
    """Decode each SMMU's stream table in DUMP and judge whether a kdump kernel would adopt it."""
    from smmu_forensics.dumps.sniff import parse_int
    from smmu_forensics.report import model

    smmus = _gather_regs(dump, regs_files, flags, smmu_base, coherent)
    if not smmus or not any(r.values for r in smmus):
        sys.stderr.write(NEED_REGS)
        sys.exit(EXIT_UNKNOWN)
    sid_n = parse_int(sid, "--sid") if sid is not None else None
    names = _rulesets(rules)
    with _open(dump, raw_base) as mem:
        parts = [model.inspect_smmu(mem, r, names, list_all, sid_n, max_stes) for r in smmus]
        report = model.build(mem, parts, names, fail_on)
    _render(report, fmt)
    sys.exit(report["exit_code"])


# -- regs ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("file", required=False)
@_reg_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def regs(file: str | None, regs_files: tuple[str, ...], rules: tuple[str, ...], coherent: bool | None, smmu_base: str | None,
         fmt: str, **flags: str | None) -> None:
    """Decode register values (no dump) and say what each ruleset makes of the geometry alone.

    Example: smmu-forensics regs --strtab-base-cfg 0x10210 --idr0 0x0d40101a --idr1 0x02730010 --cr0 0xd
    """
    from smmu_forensics.report import model

    files = regs_files + ((file,) if file else ())
    smmus = _gather_regs(None, files, flags, smmu_base, coherent)
    if not smmus or not any(r.values for r in smmus):
        sys.stderr.write(NEED_REGS)
        sys.exit(EXIT_USAGE)
    names = _rulesets(rules)
    parts = [model.inspect_smmu(None, r, names) for r in smmus]
    report = model.build(None, parts, names)
    _render(report, fmt)
    sys.exit(report["exit_code"])


def _register_synth() -> None:
    try:
        from smmu_forensics.synth.command import synth
    except ImportError:  # pragma: no cover
        return
    cli.add_command(synth)


_register_synth()


def main() -> None:
    """Entry point: run the CLI; map every error to one line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.stderr.write("smmu-forensics: aborted\n")
        sys.exit(EXIT_USAGE)
    except ForensicsError as exc:
        from smmu_forensics.report.escape import clean

        sys.stderr.write(f"smmu-forensics: {clean(exc.message)}\n")
        sys.exit(exc.exit_code)
    except MemoryError:
        sys.stderr.write("smmu-forensics: out of memory\n")
        sys.exit(EXIT_UNREADABLE)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        sys.stderr.write("smmu-forensics: interrupted\n")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # a bug: still one line, no traceback
        if os.environ.get("SMMU_FORENSICS_DEBUG"):
            raise
        from smmu_forensics.report.escape import clean

        sys.stderr.write(f"smmu-forensics: internal error: {type(exc).__name__}: {clean(exc)} "
                         "(set SMMU_FORENSICS_DEBUG=1 for the traceback and please report it)\n")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    main()

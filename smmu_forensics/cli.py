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
from typing import TYPE_CHECKING, Any

import click

from smmu_forensics import __version__

if TYPE_CHECKING:
    from smmu_forensics.report.types import Report

from smmu_forensics.errors import EXIT_INTERNAL, EXIT_UNKNOWN, EXIT_UNREADABLE, EXIT_USAGE, ForensicsError, UsageError

RULESET_CHOICES = ("v6", "v7", "latest", "all")


def _progress() -> Callable[[str, int, int], None] | None:
    """A Rich progress bar on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    import time

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    state: dict[str, Any] = {}

    def cb(label: str, done: int, total: int) -> None:
        """``total`` 0: open-ended (the bar shows bytes done); ``done == total``: finished."""
        finished = total > 0 and done >= total
        first = state.setdefault("t0", time.monotonic())
        if "p" not in state and (finished or time.monotonic() - first < 1.0):
            if finished:
                state.clear()  # the next step times itself afresh
            return  # only work that takes over a second shows a bar
        if "p" not in state:
            p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                         console=Console(stderr=True), transient=True)
            p.start()
            state["p"], state["tasks"] = p, {}
        p, tasks = state["p"], state["tasks"]
        if label not in tasks:
            tasks[label] = p.add_task(label, total=total or None)
        p.update(tasks[label], completed=done, total=total or None)
        if finished:
            p.stop()
            state.clear()

    return cb


def _console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # Rich's own handler exits 1, which means "rejected" here
            self.quiet = True
            raise BrokenPipeError

    no_color = bool(os.environ.get("NO_COLOR"))
    return _Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=False,
                   width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)


def _open(dump: str, raw_base: str | None):  # type: ignore[no-untyped-def]
    from smmu_forensics.analysis import open_memory
    from smmu_forensics.dumps.sniff import parse_int

    base = parse_int(raw_base, "--raw-base") if raw_base is not None else None
    return open_memory(dump, raw_base=base, progress=_progress())


def _symbol_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--vmlinux", metavar="FILE", help="the crashed kernel's vmlinux: its symbols (moved by KERNELOFFSET)")(f)
    return click.option("--system-map", metavar="FILE",
                        help="the crashed kernel's System.map: lets discovery walk the driver's own list of SMMUs")(f)


def _symbols(mem, system_map: str | None, vmlinux: str | None):  # type: ignore[no-untyped-def]
    """Symbols from the files given (one-line exit 2 when they cannot be read), else None."""
    from smmu_forensics.discover.symbols import SymbolError, Symbols, kernel_offset

    path = system_map or vmlinux
    if path is None:
        return None
    try:
        return Symbols.from_file(path, kernel_offset(mem.vmcoreinfo()))
    except SymbolError as exc:
        raise UsageError(str(exc)) from None


def _emit_json(obj: Any) -> None:
    from smmu_forensics.report import jsonout

    jsonout.write(obj, sys.stdout, pretty=sys.stdout.isatty())


class _Commands(click.Group):
    """Commands whose modules are heavy (``synth`` builds dumps with numpy) load only when used."""

    LAZY = {"synth": ("smmu_forensics.synth.command", "synth", "Build a dump from a scenario file (YAML or TOML).")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY and name not in self.commands:
            import importlib

            mod, attr, _ = self.LAZY[name]
            cmd = getattr(importlib.import_module(mod), attr)
            self.add_command(cmd, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, c.get_short_help_str(60)) for n, c in self.commands.items() if not c.hidden]
        rows += [(n, short) for n, (_, _, short) in self.LAZY.items() if n not in self.commands]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smmu-forensics")
@click.option("--no-cache", is_flag=True, help="unpack .gz/.xz/.zst/.bz2 dumps to a temporary file, not the cache")
def cli(no_cache: bool) -> None:
    """ARM SMMUv3 stream tables in Linux crash dumps.

    \b
    Exit codes: 0 every table adopted; 1 some table rejected or not adoptable;
    2 usage error; 3 dump unreadable; 4 verdict unknown (memory or registers missing);
    5 internal error; 130 interrupted; 141 output closed.
    """
    if no_cache:
        os.environ["SMMU_FORENSICS_NO_CACHE"] = "1"


# -- cache ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--clear", is_flag=True, help="delete every cached unpacked dump")
def cache(clear: bool) -> None:
    """Unpacked .gz/.xz/.zst/.bz2 dumps kept for the next run: where, how big; --clear empties it."""
    from smmu_forensics.dumps import unpack

    d = unpack.cache_dir()
    if d is None:
        sys.stdout.write("caching is off (SMMU_FORENSICS_NO_CACHE)\n")
        return
    if clear:
        n, size = unpack.clear_cache()
        sys.stdout.write(f"{d}: removed {n} files, {size} bytes\n")
        return
    entries = unpack.cache_entries()
    limit = os.environ.get("SMMU_FORENSICS_CACHE_MAX", unpack.DEFAULT_CACHE_MAX)
    sys.stdout.write(f"{d}: {len(entries)} files, {sum(e[1] for e in entries)} bytes (limit {limit}, SMMU_FORENSICS_CACHE_MAX)\n")
    for path, size, _ in entries:
        sys.stdout.write(f"  {size:>14} {path}\n")


# -- info ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("dump")
@click.option("--raw-base", metavar="ADDR", help="the dump is raw physical memory starting at ADDR (same as DUMP@ADDR)")
@click.option("--ranges", "all_ranges", is_flag=True, help="list every physical range (default: a summary and the largest)")
@click.option("--vmcoreinfo", "all_vmcoreinfo", is_flag=True, help="every VMCOREINFO key (default: those that matter here)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def info(dump: str, raw_base: str | None, all_ranges: bool, all_vmcoreinfo: bool, fmt: str) -> None:
    """Format, codec, page size, memory by state, largest ranges, incomplete flag, VMCOREINFO."""
    from smmu_forensics.report.memview import info_model

    with _open(dump, raw_base) as mem:
        model = info_model(mem.info(), all_vmcoreinfo)
    if fmt == "json":
        _emit_json(model)
    else:
        from smmu_forensics.report.terminal import render_info

        render_info(model, _console(), all_ranges)


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
    if a + n > 1 << 64:
        raise UsageError(f"{a:#x} + {n:#x} runs past the end of the 64-bit physical address space")
    with _open(dump, raw_base) as mem:
        r = mem.read_partial(a, n)
    if fmt == "raw":
        if r.holes:
            h = r.holes[0]
            raise _Missing(f"physical {h.start:#x}-{h.end:#x} is {h.state.value} in the dump ({h.reason}); no bytes written")
        sys.stdout.buffer.write(r.data)
        sys.stdout.flush()
        return
    from smmu_forensics.report.memview import hexdump, xp_model

    if fmt == "json":
        _emit_json(xp_model(r))
    else:
        sys.stdout.write(hexdump(r))
    if r.holes:
        sys.exit(EXIT_UNKNOWN)


# -- dmesg ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("dump")
@click.option("--raw-base", metavar="ADDR", help="the dump is raw physical memory starting at ADDR")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def dmesg(dump: str, raw_base: str | None, fmt: str) -> None:
    """The crashed kernel's log (its printk ring buffer, found through VMCOREINFO), as dmesg prints it."""
    from smmu_forensics.discover.printk import LogError, read_log
    from smmu_forensics.report import kernel_log

    with _open(dump, raw_base) as mem:
        try:
            log = read_log(mem)
        except LogError as exc:
            raise _Missing(f"{dump}: {exc}") from None
    if fmt == "json":
        _emit_json(kernel_log.model(log))
    else:
        sys.stdout.write(kernel_log.text(log))


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


NEED_REGS = """no SMMU register values given: MMIO registers are not part of a RAM dump.
Give them one of these ways:
  --regs registers.json          JSON: {"strtab_base": "0x...", "strtab_base_cfg": "0x...", "idr0": ..., "idr1": ...,
                                        "cr0": ..., "gerror": ..., "gerrorn": ...}
  DUMP.smmu.json beside the dump  the same JSON, found automatically
  --strtab-base 0x... --strtab-base-cfg 0x... --idr0 0x... --idr1 0x... --cr0 0x... --gerror 0x... --gerrorn 0x...
  --regs page0.bin               a raw 4 KiB or 64 KiB read of the SMMU's MMIO page 0
On a live or kdump system: devmem <smmu_base+0x80> 64 (STRTAB_BASE), <+0x88> (STRTAB_BASE_CFG), <+0x0> (IDR0),
<+0x4> (IDR1), <+0x20> (CR0), <+0x60> (GERROR), <+0x64> (GERRORN); or QEMU's `xp`.
"""


def _render(report: Report, fmt: str) -> None:
    if fmt == "json":
        _emit_json(report)
    elif fmt == "markdown":
        from smmu_forensics.report import markdown

        sys.stdout.write(markdown.render(report))
    else:
        from smmu_forensics.report import terminal

        terminal.render(report, _console())


def _registers_for(mem, smmus: list, system_map: str | None, vmlinux: str | None) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    """The register sets to use: those given, or (when none names a stream table) those found in
    the dump, with what was given (--coherent, --smmu-base) applied; exit 4 when nothing is found."""
    from smmu_forensics.analysis import discover_registers

    if any("strtab_base" in r.values for r in smmus):
        return smmus, []
    over = smmus[0] if smmus else None  # --coherent, --smmu-base without register values: applied to what is found
    d, smmus, found = discover_registers(mem, _symbols(mem, system_map, vmlinux))
    if over is not None and smmus:
        if len(smmus) > 1:
            raise UsageError(f"register flags apply to one SMMU, but the dump shows {len(smmus)}")
        name = smmus[0].name
        smmus = [smmus[0].merged(over)]
        smmus[0].name = name
    if not smmus:
        sys.stderr.write("no SMMU register values given, and the dump does not show them: "
                         + "; ".join(d.notes or ["no SMMU in the kernel log, no driver register copy in memory"]) + "\n"
                         + NEED_REGS)
        sys.exit(EXIT_UNKNOWN)
    return smmus, found


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
@click.option("--save-regs", metavar="FILE", help="write the registers used (found in the dump or given) as a --regs file")
@_symbol_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def inspect(dump: str, regs_files: tuple[str, ...], rules: tuple[str, ...], coherent: bool | None, smmu_base: str | None,
            raw_base: str | None, list_all: bool, sid: str | None, max_stes: int | None, fail_on: str | None, save_regs: str | None,
            system_map: str | None, vmlinux: str | None, fmt: str, **flags: str | None) -> None:
    """Decode each SMMU's stream table in DUMP and judge whether a kdump kernel would adopt it."""
    from smmu_forensics.analysis import analyze, rulesets
    from smmu_forensics.dumps.sniff import parse_int
    from smmu_forensics.report import model
    from smmu_forensics.rules.findings import Severity

    smmus = _gather_regs(dump, regs_files, flags, smmu_base, coherent)
    sid_n = parse_int(sid, "--sid") if sid is not None else None
    names = rulesets(rules)
    with _open(dump, raw_base) as mem:
        smmus, found = _registers_for(mem, smmus, system_map, vmlinux)
        if save_regs:
            _save_regs(save_regs, smmus, f"smmu-forensics {__version__} inspect {dump}")
        a = analyze(mem, smmus, names, Severity(fail_on) if fail_on else None, max_stes, found)
        report = model.build(a, list_all, sid_n)
        missing_sid = None
        if sid_n is not None and not any(s.get("sid_detail", {}).get("found") for s in report["smmus"]):
            why = next((s["sid_detail"]["why"] for s in report["smmus"] if "sid_detail" in s), "no stream table walked")
            missing_sid = f"--sid {sid_n:#x}: no STE for it ({why})"
        _render(report, fmt)
    if missing_sid:  # the report says why; the exit code says the option asked for nothing there
        raise UsageError(missing_sid)
    if found and report["exit_code"] == EXIT_UNKNOWN:
        sys.stderr.write("the dump does not show every register value the rules need (see the report's 'needs').\n"
                         + NEED_REGS.split("\n", 1)[1])
    sys.exit(report["exit_code"])


def _save_regs(path: str, smmus: list, source: str) -> None:
    from smmu_forensics.smmu.registers import register_file

    try:
        with open(path, "w") as f:
            json.dump(register_file(smmus, source), f, indent=1)
            f.write("\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


# -- dma -----------------------------------------------------------------------------------------
@cli.command()
@click.argument("dump")
@click.option("--regs", "regs_files", multiple=True, metavar="FILE", help="register JSON or MMIO page (default: found in the dump)")
@click.option("--raw-base", metavar="ADDR", help="the dump is raw physical memory starting at ADDR")
@click.option("--sid", metavar="N", help="only the contexts of this StreamID")
@click.option("--ssid", metavar="N", help="only the context descriptor of this SubstreamID")
@click.option("--iova", metavar="ADDR", help="translate this IO virtual address, level by level (with --sid, or in every context)")
@click.option("--pa", metavar="ADDR", help="list every SID, stage and IOVA whose mappings reach this physical address")
@_symbol_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def dma(dump: str, regs_files: tuple[str, ...], raw_base: str | None, sid: str | None, ssid: str | None, iova: str | None,
        pa: str | None, system_map: str | None, vmlinux: str | None, fmt: str) -> None:
    """What in-flight DMA can reach: every mapping (merged ranges), one IOVA's translation, who maps a PA.

    Exit 0 when answered, 4 when the answer may be partial (a walk stopped at its budget, a table
    or STE missing from the dump), 2 when --sid names no STE.
    """
    from smmu_forensics.analysis import analyze, dma_query
    from smmu_forensics.dumps.sniff import parse_int
    from smmu_forensics.report import dmaview

    smmus = _gather_regs(dump, regs_files, {}, None, None)
    q = {k: parse_int(v, f"--{k}") if v is not None else None for k, v in (("sid", sid), ("ssid", ssid), ("iova", iova), ("pa", pa))}
    with _open(dump, raw_base) as mem:
        smmus, found = _registers_for(mem, smmus, system_map, vmlinux)
        a = analyze(mem, smmus, [], found=found)
        ans = dma_query(mem, a, q["sid"], q["iova"], q["pa"], q["ssid"])
        devices = {s.regs.name: s.devices for s in a.smmus}
        m = dmaview.build(ans, dump, devices)
    if fmt == "json":
        _emit_json(m)
    elif fmt == "markdown":
        sys.stdout.write(dmaview.markdown(m))
    else:
        sys.stdout.write(dmaview.text(m))
    if q["sid"] is not None and not ans.contexts and all(x.config is None for x in ans.stes):
        raise UsageError(f"--sid {q['sid']:#x}: no STE for it in any walked stream table")
    sys.exit(ans.exit_code)


# -- discover ------------------------------------------------------------------------------------
@cli.command()
@click.argument("dump")
@click.option("--raw-base", metavar="ADDR", help="the dump is raw physical memory starting at ADDR")
@click.option("--save-regs", metavar="FILE", help="write the registers found as a --regs file")
@_symbol_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def discover(dump: str, raw_base: str | None, save_regs: str | None, system_map: str | None, vmlinux: str | None, fmt: str) -> None:
    """Find the SMMUs, their registers and stream tables, and the devices behind each StreamID, in DUMP alone."""
    from smmu_forensics.analysis import registers_of
    from smmu_forensics.discover.smmus import discover as run_discovery
    from smmu_forensics.report import discovery as render

    with _open(dump, raw_base) as mem:
        d = run_discovery(mem, _symbols(mem, system_map, vmlinux))
    regs = [registers_of(s) for s in d.smmus]
    if save_regs:
        _save_regs(save_regs, [r for r in regs if r is not None], f"smmu-forensics {__version__} discover {dump}")
    model = render.model(d, regs)
    if fmt == "json":
        _emit_json(model)
    else:
        sys.stdout.write(render.text(model))
    if not any(r is not None for r in regs):
        sys.exit(EXIT_UNKNOWN)


# -- regs ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("file", required=False)
@_reg_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def regs(file: str | None, regs_files: tuple[str, ...], rules: tuple[str, ...], coherent: bool | None, smmu_base: str | None,
         fmt: str, **flags: str | None) -> None:
    """Decode register values (no dump) and say what each ruleset makes of the geometry alone.

    Example: smmu-forensics regs --strtab-base 0x431be000 --strtab-base-cfg 0x10211 --idr0 0x0d40101a --idr1 0x02730010
    --cr0 0xd --gerror 0 --gerrorn 0 (rejected: LOG2SIZE 17 > SIDSIZE 16).  A geometry that passes stays
    unknown (exit 4) until a dump shows the table.
    """
    from smmu_forensics.analysis import analyze, rulesets
    from smmu_forensics.report import model

    files = regs_files + ((file,) if file else ())
    smmus = _gather_regs(None, files, flags, smmu_base, coherent)
    if not smmus or not any(r.values for r in smmus):
        sys.stderr.write(NEED_REGS)
        sys.exit(EXIT_USAGE)
    report = model.build(analyze(None, smmus, rulesets(rules)))
    _render(report, fmt)
    sys.exit(report["exit_code"])


EXIT_PIPE = 128 + 13  # 141, as a death by SIGPIPE: the reader went away, so there is no verdict to report


def main() -> None:
    """Entry point: run the CLI; map every error to one line and an exit code."""
    if "_SMMU_FORENSICS_COMPLETE" in os.environ:  # shell completion is click's own business
        cli.main(prog_name="smmu-forensics")
    try:
        try:
            # not cli.main(): it turns a closed pipe into exit 1 and Ctrl-C into Abort
            with cli.make_context("smmu-forensics", sys.argv[1:]) as ctx:
                cli.invoke(ctx)
        finally:
            sys.stdout.flush()  # a pipe closed early fails here, not silently at interpreter exit
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
        sys.exit(EXIT_PIPE)
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

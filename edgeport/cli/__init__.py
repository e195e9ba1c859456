"""The `edgeport` command line: one sub-command per module, a shared error policy.

Exit codes: 0 ok, 1 user error (EdgeportError: one line naming the problem and the fix),
2 internal error. Tracebacks only with --debug.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from edgeport import __version__
from edgeport.errors import EdgeportError
from edgeport.quiet import quiet_native_logs

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
COMMANDS = ("init", "run", "convert", "package", "flash", "bench")
# Help is wrapped to the terminal, up to this width (click's default of 80 cuts summaries short).
HELP_WIDTH = 110


class _Group(click.Group):
    """Lists each command with its whole first sentence, never cut short with '...'."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH},
    epilog="""\b
Example (a PyTorch model to verified int8 TFLite, then a Cortex-M firmware project):
  edgeport convert examples/kws_dscnn.py:build --input-shape 1,1,49,10 --quantize int8 -o out/kws
  edgeport package out/kws --target cortex-m --board nucleo-h743zi2 -o out/kws_fw

`edgeport COMMAND --help` shows each command's options and an example.""",
)
@click.version_option(__version__, prog_name="edgeport")
@click.option(
    "--debug",
    is_flag=True,
    help="Show full tracebacks and the converters' own logs (before or after the command).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """edgeport: PyTorch / ONNX -> verified TFLite -> Cortex-M firmware and Android."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_commands() -> None:
    # Each command lives in its own module; imported here so `edgeport --help` lists them all.
    import importlib

    for name in COMMANDS:
        cli.add_command(getattr(importlib.import_module(f"edgeport.cli.{name}"), name))


_register_commands()


def debug_first(args: Sequence[str]) -> list[str]:
    """`--debug` moved in front of the command, wherever it was given (up to a `--`)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return list(args)
    rest = [a for a in args[:end] if a != "--debug"]
    return ["--debug", *rest, *args[end:]]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the CLI and map failures to exit codes (see module docstring)."""
    args = debug_first(list(sys.argv[1:] if argv is None else argv))
    debug = args[:1] == ["--debug"]
    if not debug:
        quiet_native_logs()
    try:
        cli.main(args=args, prog_name="edgeport", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.exceptions.Abort as abort:
        # click turns Ctrl-C (and SIGTERM, edgeport/outdir.py) into Abort; staging was removed by then.
        interrupted = isinstance(abort.__context__, KeyboardInterrupt)
        click.echo(f"edgeport: {'interrupted; nothing was written' if interrupted else 'aborted'}.", err=True)
        return EXIT_USER_ERROR
    except click.ClickException as bad_usage:  # unknown option, missing argument, ...
        ctx = getattr(bad_usage, "ctx", None)
        where = ctx.command_path if ctx is not None else "edgeport"
        message = bad_usage.format_message().replace("\n", " ").rstrip(".")
        end = "" if message.endswith("?") else "."
        click.echo(f"edgeport: error: {message}{end} See `{where} --help`.", err=True)
        return EXIT_USER_ERROR
    except EdgeportError as err:
        if debug:
            raise
        click.echo(f"edgeport: error: {err.one_line()}", err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        click.echo("edgeport: interrupted; nothing was written.", err=True)
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence, reported as internal
        if debug:
            raise
        click.echo(
            f"edgeport: internal error: {type(exc).__name__}: {exc}. "
            "Rerun with --debug for the traceback and report it.",
            err=True,
        )
        return EXIT_INTERNAL_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())

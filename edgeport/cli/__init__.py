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
COMMANDS = ("convert", "package", "flash")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeport")
@click.option("--debug", is_flag=True, help="Show full tracebacks and the converters' own logs.")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the CLI and map failures to exit codes (see module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
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
        bad_usage.show()
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

"""The `sedpa` command line: parsing only. Each stage's commands live in one module here and call
into that stage's package; no logic beyond turning flags into a stage config."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from sedpa_compress.errors import SedpaError

app = typer.Typer(
    name="sedpa",
    help="Compress a Hugging Face causal LM for long-context inference (DuoAttention + SVD), run and benchmark it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)

# Each module defines `register(app)`; order is the pipeline's order in `sedpa --help`.
_COMMAND_MODULES = ("pipeline", "heads", "train", "bench", "hub")

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"sedpa_compress.cli.{_name}")
    except ModuleNotFoundError as exc:  # a stage not built yet in this checkout
        if exc.name != f"sedpa_compress.cli.{_name}":
            raise
        continue
    _mod.register(app)

err_console = Console(stderr=True)


def main() -> None:
    """Console-script entry point: user errors become one red line and exit status 2."""
    try:
        app(standalone_mode=False)
    except SedpaError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: nothing was written to the output path")
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors come as click exceptions
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise

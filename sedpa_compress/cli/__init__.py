"""The `sedpa` command line: parsing only. Each stage's commands live in one module here and call
into that stage's package; no logic beyond turning flags into a stage config."""

from __future__ import annotations

import functools
import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

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


def _user_errors(callback):
    """Every command turns SedpaError into one red line on stderr and exit status 2, also under CliRunner."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except SedpaError as err:
            # escaped: a message naming `sedpa-compress[data]` or a path with brackets is not rich markup
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: nothing half-written was left at the output path")
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - only CUDA OOM is turned into a line; the rest re-raises
            # The runtime plans memory before allocating (runtime/memory.py); an OOM that still happens
            # (another process took the GPU, an estimate fell short) is one line, not a traceback.
            if type(err).__name__ != "OutOfMemoryError":
                raise
            first = (str(err).strip().splitlines() or [""])[0][:160]
            err_console.print(f"[bold red]error:[/] the GPU ran out of memory ({first}): free the GPU, or use a "
                              "shorter context, a smaller --chunk, or a mode that keeps less (sedpa-w, duo)",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _wrap_all(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        if command.callback is not None and not getattr(command.callback, "_sedpa_wrapped", False):
            command.callback = _user_errors(command.callback)
            command.callback._sedpa_wrapped = True
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _wrap_all(group.typer_instance)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True)) -> None:
    if version:
        from sedpa_compress import __version__

        typer.echo(f"sedpa {__version__}")
        raise typer.Exit(0)


_wrap_all(app)


def main() -> None:
    """Console-script entry point. Usage errors exit 2 (click), SedpaError exits 2 with one line
    (see `_user_errors`), Ctrl-C exits 130."""
    app()

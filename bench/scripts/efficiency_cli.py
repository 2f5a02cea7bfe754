"""`sedpa bench efficiency` without the `sedpa bench` group (for checkouts where cli/bench.py is not
wired yet): python bench/scripts/efficiency_cli.py efficiency --config llama-3-8b --random-weights ..."""
import typer

from sedpa_compress.cli import _wrap_all
from sedpa_compress.cli.efficiency import register

app = typer.Typer(pretty_exceptions_enable=False)


@app.callback()
def _bench() -> None:
    """sedpa bench"""


register(app)
_wrap_all(app)

if __name__ == "__main__":
    app()

"""`sedpa push`, `sedpa pull`, `sedpa card`: parse flags, call `sedpa_compress.artifact.hub` / `.card`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from sedpa_compress.errors import printable

console = Console()


def _literal(text: object) -> str:
    """Text from a path, a Hub answer or a file name, safe inside rich markup: printed as it is."""
    return escape(printable(str(text)))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def push_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by `sedpa compress`.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repo ORG/NAME (created when missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private; an existing public repo is refused (make it private on the Hub first).")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to push to (created from main when missing).")] = None,
    commit_message: Annotated[Optional[str], typer.Option("--commit-message", "-m", help="Commit message.")] = None,
    results: Annotated[Optional[List[Path]], typer.Option("--results", "-r", help="Benchmark JSON from `sedpa bench` to add to the pushed card (repeatable; the local artifact is left as it is: use `sedpa card` to keep them).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the files of an existing branch that is not a sedpa artifact (refused without it).")] = False,
) -> None:
    """Upload an artifact to the Hugging Face Hub (token: HF_TOKEN or `huggingface-cli login`).

    The manifest is verified first: an artifact that fails it is refused before any network call.
    The repo ends up holding exactly the manifest's files (plus any --results); its model card names
    the repo. An existing branch that is not a sedpa artifact is not replaced without --force.
    """
    from sedpa_compress.artifact.hub import PushConfig, push

    result = push(PushConfig(artifact=artifact, repo_id=repo_id, private=private, revision=revision,
                             commit_message=commit_message, results=list(results or []), force=force))
    console.print(f"[green]pushed[/] {_literal(artifact)} -> {_literal(result.url)} ({_literal(result.revision)}"
                  + (f", commit {_literal(result.commit[:10])}" if result.commit else "")
                  + f"; {result.files} files, {_size(result.bytes)})", highlight=False)
    spec = result.repo_id + (f"@{revision}" if revision and revision != "main" else "")
    console.print(f"load it with: sedpa generate --model {printable(spec)} --prompt ...", highlight=False, markup=False)


def pull_cmd(
    repo_id: Annotated[str, typer.Argument(help="Hub repo ORG/NAME: a sedpa artifact or a base model.")],
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit (default: main).")] = None,
) -> None:
    """Download a Hub repo into the Hugging Face cache, where `--model ORG/NAME` then finds it offline."""
    from sedpa_compress.artifact.hub import pull

    with console.status(f"downloading {_literal(repo_id)}…"):
        result = pull(repo_id, revision=revision)
    kind = "sedpa artifact (manifest verified)" if result.is_artifact else "model"
    console.print(f"[green]pulled[/] {_literal(result.repo_id)}@{_literal(result.revision)}: {kind}"
                  + (f" (commit {_literal(result.commit[:10])})" if result.commit else ""), highlight=False)
    spec = result.repo_id + (f"@{revision}" if revision else "")
    console.print(f"use it offline with --model {printable(spec)} (any command), e.g. sedpa generate --model "
                  f"{printable(spec)} --prompt ...", highlight=False, markup=False)
    typer.echo(str(result.path))  # last line: the snapshot directory, for scripts


def card_cmd(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by `sedpa compress`.")],
    results: Annotated[Optional[List[Path]], typer.Option("--results", "-r", help="Benchmark JSON from `sedpa bench` (repeatable); copied into the artifact's results/.")] = None,
) -> None:
    """Re-render the artifact's model card (README.md) with measured benchmark tables; rewrites manifest.json."""
    from sedpa_compress.artifact.card import update_card

    update = update_card(artifact, list(results or []))
    added = f"added {', '.join(update.added)}; " if update.added else ""
    console.print(f"[green]updated[/] {_literal(artifact)}/README.md ({_literal(added)}{update.results} result file(s) in the card)",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("push")(push_cmd)
    app.command("pull")(pull_cmd)
    app.command("card")(card_cmd)

"""Refusal wording the issues named: each says what the input is and what to pass instead."""

from __future__ import annotations

from typer.testing import CliRunner

from sedpa_compress.cli import app
from sedpa_compress.heads.config import load_recipe


def _out(*args) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    return " ".join(r.output.split())


def test_prompt_file_that_is_not_a_regular_file(tmp_path):
    assert "--prompt-file /dev/null is not a regular file (a device, pipe or socket): pass a text file" in \
        _out("generate", "--prompt-file", "/dev/null")
    assert f"--prompt-file {tmp_path} is a folder" in _out("generate", "--prompt-file", tmp_path)
    assert "does not exist: pass an existing text file" in _out("generate", "--prompt-file", tmp_path / "none.txt")


def test_recipe_types_are_named_in_words(tmp_path):
    import pytest

    from sedpa_compress.errors import SedpaError

    for text, words in (("steps: many\n", "`steps` must be an integer, got 'many'"),
                        ("lr: fast\n", "`lr` must be a number, got 'fast'"),
                        ("optimizer: 3\n", "`optimizer` must be a string, got 3")):
        (tmp_path / "r.yaml").write_text(text)
        with pytest.raises(SedpaError, match=words.replace("(", r"\(")):
            load_recipe(tmp_path / "r.yaml")


def test_error_lines_keep_square_brackets(tmp_path):
    # `[data]` in a message is text, not rich markup
    missing = tmp_path / "a[data]b.jsonl"
    assert f"--data {missing}: no such file or folder" in _out("calibrate", "--data", missing, "--out", tmp_path / "c")

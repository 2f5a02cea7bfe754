"""Issue 17, the artifact's trust boundary: nothing loads or uploads that the manifest does not vouch for.

Each hole the security read found, as the input that showed it: files the manifest does not list (a
weights index and shard that overwrote a verified tensor, a tokenizer with its chat template, a head
pattern, a symlink to a file elsewhere), malformed names and indexes that gave tracebacks, oversized
JSON, rich markup and terminal escapes in error text, an --overwrite that deleted any path, and the
files a run leaves (umask, fsync, killed pushes). Every refusal is one line and exit 2; the rows go to
the README's table.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from faults.harness import REPO, TALLY, cli, refused

INDEX = "model.safetensors.index.json"
SHARD = "model-00001-of-00001.safetensors"


def _resave(art: Path) -> Path:
    from sedpa_compress.artifact.manifest import write_manifest

    write_manifest(art)  # every file listed and hashed: the loader itself must catch what is wrong
    return art


def _edit_manifest(art: Path, edit) -> Path:
    m = json.loads((art / "manifest.json").read_text())
    edit(m["files"])
    (art / "manifest.json").write_text(json.dumps(m))
    return art


def _copy(w, t: Path) -> Path:
    return w.artifact_copy(t / "art")


def _unlisted_shard(w, t: Path) -> Path:
    """The reproduction: the listed model.safetensors holds zeros for one weight; an index and two shards
    nobody listed load after it, and the later shard's ones replaced the verified zeros."""
    from safetensors.torch import load_file, save_file

    art = _copy(w, t)
    state = load_file(str(art / "model.safetensors"))
    key = "model.norm.weight"
    state[key] = torch.zeros_like(state[key])
    save_file(state, str(art / "model.safetensors"), metadata={"format": "pt"})
    _resave(art)
    save_file(state, str(art / "a.safetensors"), metadata={"format": "pt"})
    save_file({key: torch.ones_like(state[key])}, str(art / "b.safetensors"), metadata={"format": "pt"})
    weight_map = {**{k: "a.safetensors" for k in state}, key: "b.safetensors"}
    (art / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return art


def _unlisted_tokenizer(w, t: Path) -> Path:
    art = _copy(w, t)
    (art / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ 'injected' }}"}))
    return art


def _unlisted_pattern(w, t: Path) -> Path:
    return _edit_manifest(_copy(w, t), lambda files: files.pop("sedpa_pattern.json"))


def _listed_name(name: str):
    """The manifest lists `name` (a file that is not there): the error line quotes the name."""
    def build(w, t: Path) -> Path:
        return _edit_manifest(_copy(w, t), lambda files: files.update({name: {"sha256": "0" * 64, "bytes": 1}}))
    return build


def _symlink_loop(w, t: Path) -> Path:
    art = _copy(w, t)
    (art / "loop").symlink_to(art / "loop")
    return _edit_manifest(art, lambda files: files.update({"loop": {"sha256": "0" * 64, "bytes": 1}}))


def _sharded(index: bytes | None, *, keep_single: bool = False):
    """The artifact's weights as one shard named by an index (`index` bytes, or a valid one), all listed."""
    def build(w, t: Path) -> Path:
        from safetensors.torch import load_file

        art = _copy(w, t)
        keys = list(load_file(str(art / "model.safetensors")))
        shutil.copy(art / "model.safetensors", art / SHARD)
        if not keep_single:
            (art / "model.safetensors").unlink()
        data = index if index is not None else json.dumps({"metadata": {}, "weight_map": {k: SHARD for k in keys}}).encode()
        (art / INDEX).write_bytes(data)
        return _resave(art)
    return build


def _tensor_in_two_shards(w, t: Path) -> Path:
    from safetensors.torch import load_file, save_file

    art = _copy(w, t)
    state = load_file(str(art / "model.safetensors"))
    key = "model.norm.weight"
    save_file(state, str(art / "a.safetensors"), metadata={"format": "pt"})
    save_file({key: torch.ones_like(state[key])}, str(art / "b.safetensors"), metadata={"format": "pt"})
    (art / "model.safetensors").unlink()
    (art / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": {k: "a.safetensors" for k in state}
                                         | {key: "b.safetensors"}}))
    return _resave(art)


def _padded(name: str, size: int, *, listed: bool = True):
    """`name` made larger than sedpa reads (valid JSON: the content padded with spaces)."""
    def build(w, t: Path) -> Path:
        art = _copy(w, t)
        path = art / name
        path.write_bytes(path.read_bytes() + b" " * size)
        return _resave(art) if listed else art
    return build


def _big_index(w, t: Path) -> Path:
    art = _sharded(None)(w, t)
    path = art / INDEX
    path.write_bytes(path.read_bytes() + b" " * (64 * MiB))
    return _resave(art)


GEN = ["--prompt", "hi", "--device", "cpu"]
MiB = 1 << 20

# (area, what, args(w, tmp) -> list, expect)
CASES = [
    ("artifact", "an unlisted weights index and shard that would overwrite a verified tensor",
     lambda w, t: ["generate", "--model", _unlisted_shard(w, t), *GEN], "does not list"),
    ("artifact", "an unlisted tokenizer file (tokenizer_config.json with a chat template)",
     lambda w, t: ["generate", "--model", _unlisted_tokenizer(w, t), *GEN], "does not list"),
    ("artifact", "a sedpa_pattern.json the manifest does not list",
     lambda w, t: ["generate", "--model", _unlisted_pattern(w, t), *GEN], "does not list"),
    ("artifact", "a file name with a NUL byte in the manifest",
     lambda w, t: ["generate", "--model", _listed_name("model\x00.safetensors")(w, t), *GEN], "control character"),
    ("artifact", "a 256-character file name in the manifest",
     lambda w, t: ["generate", "--model", _listed_name("a" * 256)(w, t), *GEN], "longer than a file name"),
    ("artifact", "a manifest name that is not a plain relative path (./config.json)",
     lambda w, t: ["generate", "--model", _listed_name("./config.json")(w, t), *GEN], "plain relative path"),
    ("artifact", "the manifest lists a symlink loop",
     lambda w, t: ["generate", "--model", _symlink_loop(w, t), *GEN], "looping symlink"),
    ("artifact", "a manifest byte count of 1e400 (a float, infinite)",
     lambda w, t: ["generate", "--model", _edit_manifest(_copy(w, t), lambda f: f["config.json"].update(bytes=1e400)),
                   *GEN], "malformed"),
    ("artifact", "a weights index that is not UTF-8",
     lambda w, t: ["generate", "--model", _sharded(b"\xff\xfe{}")(w, t), *GEN], "not UTF-8"),
    ("artifact", "a weights index nested 100000 deep",
     lambda w, t: ["generate", "--model", _sharded(b"[" * 100_000)(w, t), *GEN], "nested too deeply"),
    ("artifact", "a weights index holding a 5000-digit integer",
     lambda w, t: ["generate", "--model", _sharded(b'{"weight_map": {"a": ' + b"9" * 5000 + b"}}")(w, t), *GEN],
     "integer too long"),
    ("artifact", "a weights index naming a file outside the artifact",
     lambda w, t: ["generate", "--model", _sharded(b'{"weight_map": {"a": "../model.safetensors"}}')(w, t), *GEN],
     "outside the artifact"),
    ("artifact", "a tensor held by two listed shards (the later one would win)",
     lambda w, t: ["generate", "--model", _tensor_in_two_shards(w, t), *GEN], "assigns elsewhere"),
    ("artifact", "model.safetensors and a weights index side by side",
     lambda w, t: ["generate", "--model", _sharded(None, keep_single=True)(w, t), *GEN], "holds both"),
    ("artifact", "a manifest.json larger than 16 MiB",
     lambda w, t: ["generate", "--model", _padded("manifest.json", 16 * MiB, listed=False)(w, t), *GEN], "larger than 16 MiB"),
    ("artifact", "a config.json larger than 16 MiB",
     lambda w, t: ["generate", "--model", _padded("config.json", 16 * MiB)(w, t), *GEN], "larger than 16 MiB"),
    ("artifact", "a weights index larger than 64 MiB",
     lambda w, t: ["generate", "--model", _big_index(w, t), *GEN], "larger than 64 MiB"),
    ("artifact", "rich markup `[/]` in a name the error quotes (it used to crash the error printer)",
     lambda w, t: ["generate", "--model", _listed_name("weights[/].safetensors")(w, t), *GEN], "weights[/].safetensors"),
    ("artifact", "a `[link=...]` in a name the error quotes (printed as text, not a link)",
     lambda w, t: ["generate", "--model", _listed_name("[link=evil]x[/link].txt")(w, t), *GEN],
     "[link=evil]x[/link].txt"),
    ("artifact", "a terminal escape (ESC[2J) in a name the error quotes",
     lambda w, t: ["generate", "--model", _listed_name("\x1b[2Jx")(w, t), *GEN], "control character"),
    ("artifact", "a bidi override (U+202E) in a name the error quotes",
     lambda w, t: ["generate", "--model", _listed_name("x\u202etxt.exe")(w, t), *GEN], "control character"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_refused(case, world, tmp_path):
    area, what, build, expect = case
    message = refused(area, what, build(world, tmp_path), expect)
    assert "\x1b" not in message and "\u202e" not in message


def test_an_unlisted_shard_no_longer_replaces_a_verified_tensor(world, tmp_path):
    """The reproduction through the library: the weight used to come back all ones (the unlisted shard's)
    instead of the listed file's zeros."""
    from sedpa_compress.artifact.manifest import verify_manifest
    from sedpa_compress.errors import SedpaError
    from sedpa_compress.models import load_model

    art = _unlisted_shard(world, tmp_path)
    with pytest.raises(SedpaError, match="'a.safetensors' \\(and 2 more\\), which manifest.json does not list"):
        load_model(str(art))
    for name in ("a.safetensors", "b.safetensors", INDEX):
        (art / name).unlink()
    verify_manifest(art)
    loaded = load_model(str(art))
    assert not loaded.model.model.norm.weight.detach().any()  # the listed file's zeros


def test_error_text_is_printed_literally(world, tmp_path):
    """Names from a manifest reach the error line as text: `[/]` no longer crashes rich, `[link=...]` is
    not a hyperlink, ESC is written `\\x1b` (never sent to the terminal)."""
    from rich.console import Console

    from sedpa_compress import cli as cli_module

    art = _listed_name("\x1b]8;;https://evil.example\x07[link=https://evil.example]click[/link][/]")(world, tmp_path)
    record = Console(stderr=True, record=True, force_terminal=True, width=400)
    original = cli_module.err_console
    cli_module.err_console = record
    try:
        r = cli("generate", "--model", art, *GEN)
    finally:
        cli_module.err_console = original
    assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    text = record.export_text(styles=False)
    assert "[link=https://evil.example]click[/link][/]" in text and "\\x1b]8;;" in text and "\\x07" in text
    ansi = record.export_text(styles=True)
    assert "\x1b]8;;" not in ansi  # no OSC 8 hyperlink reached the terminal
    TALLY.fault("error text quoting a manifest name full of rich markup and terminal escapes (OSC 8 link, BEL)",
                "printed literally: markup as text, control characters as \\x1b / \\x07; no crash, no link")


# ------------------------------------------------------------------------------- push (the Hub stub)

@pytest.fixture
def hub(monkeypatch, tmp_path):
    from hubstub import HubStub, point_huggingface_hub_at

    with HubStub(token="hf_fault_suite_token") as stub:
        point_huggingface_hub_at(monkeypatch, stub.url, tmp_path / "hf", token="hf_fault_suite_token")
        yield stub


def _linked_out(w, t: Path) -> Path:
    art = _copy(w, t)
    (t / "private.txt").write_text("a file elsewhere on disk")
    (art / "notes.txt").symlink_to(t / "private.txt")
    return art


def test_push_refusals(world, tmp_path, hub):
    requests = len(hub.requests)
    refused("hub", "push an artifact holding a symlink to a file elsewhere on disk (it used to be uploaded)",
            ["push", _linked_out(world, tmp_path), "--repo-id", "org/linked"], "does not list")
    assert len(hub.requests) == requests and "org/linked" not in hub.repos
    hub.add_repo("org/someones-model", {"config.json": b"{}", "pytorch_model.bin": b"their weights"})
    refused("hub", "push to an existing repo that is not a sedpa artifact, without --force",
            ["push", world.artifact, "--repo-id", "org/someones-model"], "--force")
    assert "pytorch_model.bin" in hub.files("org/someones-model")
    hub.add_repo("org/public", {})
    refused("hub", "push --private to an existing public repo (it used to be ignored)",
            ["push", world.artifact, "--repo-id", "org/public", "--private"], "is public")
    assert not hub.repos["org/public"].private


def test_a_killed_push_leaves_staging_the_next_one_removes(world, tmp_path, hub):
    art = _copy(world, tmp_path)
    stale = tmp_path / ".art.push-pid999999999-x1y2"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half staged")
    r = cli("push", art, "--repo-id", "org/tiny")
    assert r.exit_code == 0, r.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".art.")] == []
    TALLY.fault("`sedpa push` killed while staging (its `.ART.push-pid<N>-*` folder left behind)",
                "the next push (or compress/card into the same folder) removes it, like any partial output; "
                "an artifact in the Hub cache is staged outside `snapshots/`")


# ---------------------------------------------------------------------------------- --out and --overwrite

def _compress(w, out, *extra):
    return ["compress", "--model", w.model, "--pattern", w.pattern, "--calibration", w.calibration,
            "--rank-ratio", 0.7, "--no-ppl", "--device", "cpu", "--out", out, *extra]


def test_overwrite_replaces_only_an_artifact_or_an_empty_folder(world, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not an artifact")
    refused("pipeline", "--overwrite of a --out that is a file (it used to be deleted)",
            _compress(world, a_file, "--overwrite"), "not a sedpa artifact")
    assert a_file.read_text() == "not an artifact"
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8 a photo")
    refused("pipeline", "--overwrite of a folder that is not a sedpa artifact (it used to be deleted)",
            _compress(world, folder, "--overwrite"), "not a sedpa artifact")
    assert (folder / "cat.jpg").read_bytes() == b"\xff\xd8 a photo"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(*_compress(world, empty, "--overwrite")).exit_code == 0
    assert cli(*_compress(world, empty, "--overwrite")).exit_code == 0  # an artifact: replaced
    refused("pipeline", "--out inside a regular file (compress)", _compress(world, a_file / "art"),
            "is a file, not a folder")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_outputs_respect_the_umask(world, tmp_path):
    """Issue 15: artifacts used to be 0700 (mkdtemp) with 0600 files (mkstemp): no other user or serving
    process could read them. Now a folder and its files get what the umask gives any new file."""
    old = os.umask(0o022)
    try:
        assert cli(*_compress(world, tmp_path / "art")).exit_code == 0
        calib = tmp_path / "c.safetensors"
        r = cli("calibrate", "--model", world.model, "--tokens", 256, "--seq-len", 64, "--out", calib, "--device", "cpu")
        assert r.exit_code == 0, r.output
        os.umask(0o027)
        assert cli(*_compress(world, tmp_path / "art027")).exit_code == 0
    finally:
        os.umask(old)
    art = tmp_path / "art"
    assert (art.stat().st_mode & 0o777) == 0o755
    modes = {p.name: p.stat().st_mode & 0o777 for p in art.iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert (calib.stat().st_mode & 0o777) == 0o644
    assert (tmp_path / "art027").stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "art027").iterdir()} == {0o640}
    TALLY.fault("outputs under umask 022 and 027 (they used to be 0700 folders of 0600 files)",
                "artifact folder 0755 / 0750, its files and calibration files 0644 / 0640")


def test_everything_is_on_disk_before_the_old_artifact_goes(world, tmp_path, monkeypatch):
    from sedpa_compress import atomic

    out = tmp_path / "art"
    assert cli(*_compress(world, out)).exit_code == 0
    synced, events = set(), []
    real_fsync, real_rmtree = os.fsync, shutil.rmtree

    def fsync(fd):
        synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def rmtree(path, *a, **k):
        events.append((str(path), set(synced)))
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.shutil, "rmtree", rmtree)
    assert cli(*_compress(world, out, "--overwrite")).exit_code == 0
    old = [(p, seen) for p, seen in events if ".old-" in p]
    assert old, events
    _, seen = old[0]
    for f in out.iterdir():  # each new file was fsynced (under its temporary path) before the old one went
        assert any(s.endswith("/" + f.name) for s in seen), f.name
    assert str(tmp_path) in seen  # and the folder holding the swapped names
    TALLY.fault("`--overwrite` of an artifact (power loss during the swap)",
                "every new file and folder is fsynced before the old artifact is deleted")


# ------------------------------------------------------------------------------------ what CI checks

def test_torch_floor_excludes_the_weights_only_bypass():
    """torch.load(weights_only=True) could run code before 2.6 (CVE-2025-32434): the floor excludes it."""
    import re

    text = (REPO / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert floor and (int(floor.group(1)), int(floor.group(2))) >= (2, 6), floor


def test_make_test_checks_the_readme_refusal_table():
    """CI runs exactly `make setup && make test`: the README table check must be part of `make test`."""
    make = (REPO / "Makefile").read_text()
    recipe = make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in recipe and "tests/faults/update_readme.py --check" in recipe
    assert "make test" in (REPO / ".ci" / "run").read_text()

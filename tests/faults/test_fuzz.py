"""Fuzz every loader that reads a file a stranger may have made: head patterns, artifact manifests,
the config's `sedpa` block, whole artifacts (config, weights, pattern), calibration files, recipes.

Each example starts from a real, valid file and damages it (tests/faults/mutate.py). The loader must
either load it or raise SedpaError with one line — never another exception, never a hang (each example
runs under a wall-clock guard). Hypothesis runs derandomized (a fixed seed) with a small example count
in CI; `pytest tests/faults/test_fuzz.py --fuzz-long` or `SEDPA_FUZZ_EXAMPLES=5000` runs longer locally.
"""

from __future__ import annotations

import json


import pytest
from hypothesis import HealthCheck, given, settings

from faults.conftest import fuzz_examples
from faults.harness import TALLY, no_hang
from faults.mutate import mutated_json_text, mutated_safetensors
from sedpa_compress.errors import SedpaError

HANG_S = 20.0  # one example; a clean refusal takes milliseconds, a full artifact load well under a second


def _settings(request, ci: int):
    return settings(max_examples=fuzz_examples(request.config, ci), derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def attempt(loader: str, call) -> None:
    """Run one fuzzed load: a clean load or a one-line SedpaError is a survived input; anything else fails."""
    with no_hang(HANG_S):
        try:
            call()
        except SedpaError as exc:
            message = str(exc)
            assert message and "\n" not in message, f"{loader}: a multi-line error: {message!r}"
            TALLY.fuzzed(loader, message)
            return
    TALLY.fuzzed(loader, None)


@pytest.fixture(scope="module")
def art(world, tmp_path_factory):
    """A private copy of the world's artifact that the fuzz tests may damage (and restore)."""
    return world.artifact_copy(tmp_path_factory.mktemp("fuzz") / "art")


def _restoring(art, name: str):
    """Keep a pristine copy of art/name and put it back (with the manifest) after the test."""
    original = (art / name).read_bytes(), (art / "manifest.json").read_bytes()

    def restore():
        (art / name).write_bytes(original[0])
        (art / "manifest.json").write_bytes(original[1])

    return original[0], restore


def test_fuzz_pattern_loader(world, tmp_path, request):
    from sedpa_compress.heads.pattern import HeadPattern
    from sedpa_compress.runtime.modes import build_mode

    doc = json.loads(world.pattern.read_text())
    path = tmp_path / "fuzzed.pattern.json"

    def load():
        pattern = HeadPattern.load(path, geometry=world.geometry)
        pattern.with_ratio(0.5)
        build_mode("duo", pattern=pattern)  # what generate/bench do next with a pattern that loaded

    @_settings(request, 300)
    @given(mutated_json_text(doc))
    def run(data):
        path.write_bytes(data)
        attempt("HeadPattern.load (*.pattern.json)", load)

    run()


def test_fuzz_manifest(art, request):
    from sedpa_compress.artifact.manifest import verify_manifest

    good, restore = _restoring(art, "manifest.json")
    try:
        @_settings(request, 200)
        @given(mutated_json_text(json.loads(good)))
        def run(data):
            (art / "manifest.json").write_bytes(data)
            attempt("verify_manifest (manifest.json)", lambda: verify_manifest(art))

        run()
    finally:
        restore()


def test_fuzz_sedpa_block(art, request):
    from sedpa_compress.artifact.reader import read_sedpa_block

    good, restore = _restoring(art, "config.json")
    doc = json.loads(good)
    try:
        @_settings(request, 200)
        @given(mutated_json_text(doc["sedpa"]))
        def run_block(data):
            try:
                block = json.loads(data)
            except (ValueError, RecursionError):
                (art / "config.json").write_bytes(data)  # damaged text: the whole file is what the loader sees
            else:
                (art / "config.json").write_text(json.dumps({**doc, "sedpa": block}, allow_nan=True))
            attempt("read_sedpa_block (config.json `sedpa`)", lambda: read_sedpa_block(art))

        run_block()
    finally:
        restore()


def _load_artifact(art):
    from sedpa_compress.artifact.manifest import write_manifest
    from sedpa_compress.models import load_model

    write_manifest(art)  # a consistent manifest: the loader's own checks must catch the damage

    def load():
        from sedpa_compress.runtime.session import mode_for

        loaded = load_model(str(art), device="cpu")
        mode_for(loaded, None)  # reads the artifact's pattern and builds its default mode
    return load


def test_fuzz_artifact_config(art, request):
    good, restore = _restoring(art, "config.json")
    try:
        @_settings(request, 60)
        @given(mutated_json_text(json.loads(good)))
        def run(data):
            (art / "config.json").write_bytes(data)
            attempt("load_model(artifact) config.json", _load_artifact(art))

        run()
    finally:
        restore()


def test_fuzz_artifact_weights(art, request):
    good, restore = _restoring(art, "model.safetensors")
    try:
        @_settings(request, 80)
        @given(mutated_safetensors(good))
        def run(data):
            (art / "model.safetensors").write_bytes(data)
            attempt("load_model(artifact) model.safetensors", _load_artifact(art))

        run()
    finally:
        restore()


def test_fuzz_artifact_pattern(art, request):
    good, restore = _restoring(art, "sedpa_pattern.json")
    try:
        @_settings(request, 40)
        @given(mutated_json_text(json.loads(good)))
        def run(data):
            (art / "sedpa_pattern.json").write_bytes(data)
            attempt("load_model(artifact) sedpa_pattern.json", _load_artifact(art))

        run()
    finally:
        restore()


def test_fuzz_calibration_file(world, tmp_path, request):
    from sedpa_compress.calibration.stats import load_stats
    from sedpa_compress.models import load_model

    loaded = load_model(str(world.model))
    path = tmp_path / "fuzzed.safetensors"

    def load():
        from sedpa_compress.svd.whitening import cholesky_factor

        stats = load_stats(path)
        stats.check_model(loaded)
        for m in stats.attn_input + stats.o_input:  # what compress does next with a file that loaded
            cholesky_factor(m)

    @_settings(request, 200)
    @given(mutated_safetensors(world.calibration.read_bytes()))
    def run(data):
        path.write_bytes(data)
        attempt("load_stats (calibration .safetensors)", load)

    run()


def test_fuzz_recipe(tmp_path, request):
    import yaml

    from sedpa_compress.heads.config import load_recipe

    from faults.harness import REPO

    doc = yaml.safe_load((REPO / "recipes" / "identify-sedpa-tiny.yaml").read_text())
    path = tmp_path / "fuzzed.yaml"

    @_settings(request, 200)
    @given(mutated_json_text(doc))  # JSON is YAML: every mutated document is a recipe file too
    def run(data):
        path.write_bytes(data)
        attempt("load_recipe (identify-heads YAML)", lambda: load_recipe(path))

    run()


def test_the_fuzzed_artifact_was_restored(art):
    """The fuzz tests put every file back: the copy still loads (so a refusal above was the damage's)."""
    from sedpa_compress.artifact.manifest import verify_manifest
    from sedpa_compress.models import load_model

    verify_manifest(art)
    assert load_model(str(art)).source == "artifact"



def test_fuzz_identify_heads_checkpoint(world, tmp_path, request):
    """`identify-heads --resume` on a damaged checkpoint: the payload (loaded with weights_only=True) has
    an entry replaced — by a JSON value, a tensor of another shape, NaN gates — mostly keeping the right
    fingerprint, so the resume code past the fingerprint check is what gets tried."""
    import torch
    from hypothesis import strategies as st

    from faults.mutate import JSON_VALUES
    from sedpa_compress.heads.config import IdentifyConfig
    from sedpa_compress.heads.train import identify_heads
    from sedpa_compress.models import load_model

    loaded = load_model(str(world.model))
    cfg = IdentifyConfig(sink=4, recent=16, context_min=300, context_max=360, num_passkeys=1, steps=2,
                         ).validate()
    out = tmp_path / "h.pattern.json"
    identify_heads(loaded, cfg, out=out)
    ckpt = out.with_name("h.identify-ckpt.pt")
    good = torch.load(ckpt, map_location="cpu", weights_only=True)
    keys = sorted(good)
    tensors = st.sampled_from([torch.zeros(3), torch.full_like(good["gates"], float("nan")), torch.zeros(2, 2, 2),
                               torch.ones_like(good["gates"]).long(), torch.tensor([])])

    @_settings(request, 40)
    @given(st.lists(st.tuples(st.sampled_from(keys), st.one_of(JSON_VALUES, tensors)), min_size=1, max_size=2),
           st.booleans())
    def run(edits, drop):
        payload = dict(good)
        for key, value in edits:
            payload[key] = value
        if drop:
            payload.pop(edits[0][0])
        try:
            torch.save(payload, ckpt)
        except Exception:  # noqa: BLE001 - a value torch cannot save is not a file anyone can hand sedpa
            return
        attempt("identify-heads --resume checkpoint", lambda: identify_heads(loaded, cfg, out=out, resume=True))

    run()

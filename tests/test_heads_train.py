"""`identify_heads`: frozen weights, gates learn, checkpoints resume bit-for-bit, bad input is refused."""

from __future__ import annotations

import pytest
import torch

from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.config import IdentifyConfig
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.heads.train import checkpoint_path, identify_heads, lr_lambda
from sedpa_compress.models import load_model
from sedpa_compress.models.families import AttentionGeometry

from conftest import build_tiny

# Byte-level tokens (these test models have no tokenizer): 2 passkeys need ~450 tokens of fixed text.
CFG = IdentifyConfig(sink=4, recent=16, steps=6, lr=0.05, context_min=600, context_max=700, context_intervals=3,
                     num_passkeys=2, checkpoint_every=2, retrieval_ratio=0.5)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(str(build_tiny("llama", tmp_path_factory.mktemp("m") / "model", max_pos=1024)))


def test_training_moves_only_the_gates_and_writes_the_pattern(loaded, tmp_path):
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    seen = []

    def check(log, gated):
        assert gated.gates.grad is not None and gated.gates.grad.abs().sum() > 0
        assert all(p.grad is None for p in loaded.model.parameters())
        seen.append(log.step)

    out = tmp_path / "m.pattern.json"
    result = identify_heads(loaded, CFG, out=out, on_step=check)
    assert seen == list(range(1, 7))
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in loaded.model.parameters())  # restored afterwards
    pattern = HeadPattern.load(out, geometry=loaded.geometry)
    flat = [g for row in pattern.gates for g in row]
    assert all(0.0 <= g <= 1.0 for g in flat) and min(flat) < 1.0  # the L1 term pulled gates down
    assert pattern.actual_retrieval_ratio == 0.5 and (pattern.sink, pattern.recent) == (4, 16)
    assert pattern.training["steps_done"] == 6 and "distill" in pattern.training["final_losses"]
    assert pattern.training["settings"]["lr"] == 0.05
    assert result.history[-1].step == 6 and checkpoint_path(out).is_file()


def test_the_pattern_records_the_deployed_shape_and_the_training_one(loaded, tmp_path):
    cfg = CFG.with_overrides(steps=2, deploy_sink=2, deploy_recent=32)
    pattern = identify_heads(loaded, cfg, out=tmp_path / "d.pattern.json").pattern
    assert (pattern.sink, pattern.recent) == (2, 32)
    assert (pattern.training["settings"]["sink"], pattern.training["settings"]["recent"]) == (4, 16)


def test_original_full_attention_source_trains_other_gates(loaded, tmp_path):
    """DuoAttention's reference mixes with the original model's full attention: a different objective."""
    assert CFG.full_attention_source == "original"  # the default, as DuoAttention's reference code
    gated = identify_heads(loaded, CFG.with_overrides(full_attention_source="gated"), out=tmp_path / "g.pattern.json").pattern
    original = identify_heads(loaded, CFG, out=tmp_path / "o.pattern.json").pattern
    assert original.training["settings"]["full_attention_source"] == "original"
    assert original.gates != gated.gates
    assert all(0.0 <= g <= 1.0 for row in original.gates for g in row)


def test_resume_gives_the_same_gates_as_an_uninterrupted_run(loaded, tmp_path):
    whole = identify_heads(loaded, CFG, out=tmp_path / "a.pattern.json")
    part = identify_heads(loaded, CFG, out=tmp_path / "b.pattern.json", stop_after=3)
    assert part.history[-1].step == 3 and not (tmp_path / "b.pattern.json").exists()
    rest = identify_heads(loaded, CFG, out=tmp_path / "b.pattern.json", resume=True)
    assert rest.resumed_from == 3
    assert rest.pattern.gates == whole.pattern.gates  # bit-for-bit
    assert [h.loss for h in rest.history] == [h.loss for h in whole.history]


def test_resume_refuses_a_checkpoint_of_another_recipe(loaded, tmp_path):
    out = tmp_path / "c.pattern.json"
    identify_heads(loaded, CFG, out=out, stop_after=2)
    with pytest.raises(SedpaError, match="another model or recipe.*lr=0.05"):
        identify_heads(loaded, CFG.with_overrides(lr=0.1), out=out, resume=True)


def test_resume_refuses_a_checkpoint_of_another_model(loaded, tmp_path):
    out = tmp_path / "d.pattern.json"
    identify_heads(loaded, CFG, out=out, stop_after=2)
    other = load_model(str(build_tiny("llama-mha", tmp_path / "mha", max_pos=1024)))
    with pytest.raises(SedpaError, match="another model or recipe"):
        identify_heads(other, CFG, out=out, resume=True)


def test_context_beyond_the_position_limit_is_refused(loaded, tmp_path):
    with pytest.raises(SedpaError, match="beyond .* position limit of 1024"):
        identify_heads(loaded, CFG.with_overrides(context_max=4096), out=tmp_path / "e.pattern.json")


def test_haystack_file_too_short_is_refused(loaded, tmp_path):
    hay = tmp_path / "hay.txt"
    hay.write_text("Too short. " * 20)
    with pytest.raises(SedpaError, match="only .* tokens"):
        identify_heads(loaded, CFG.with_overrides(haystack=str(hay)), out=tmp_path / "f.pattern.json")


def test_pattern_load_rejects_a_model_of_another_shape(loaded, tmp_path):
    out = tmp_path / "g.pattern.json"
    identify_heads(loaded, CFG.with_overrides(steps=1), out=out)
    g = loaded.geometry
    other = AttentionGeometry(num_layers=g.num_layers + 1, num_heads=g.num_heads, num_kv_heads=g.num_kv_heads,
                              head_dim=g.head_dim, hidden_size=g.hidden_size, max_position_embeddings=1024)
    with pytest.raises(SedpaError, match="identify heads for this model"):
        HeadPattern.load(out, geometry=other)
    # the file states its own shape, and a gates matrix that disagrees with it is refused
    import json

    data = json.loads(out.read_text())
    assert (data["num_layers"], data["num_kv_heads"]) == (g.num_layers, g.num_kv_heads)
    data["gates"], data["mask"] = data["gates"][:-1], data["mask"][:-1]
    out.write_text(json.dumps(data))
    with pytest.raises(SedpaError, match="says num_layers 2 but its gates have 1"):
        HeadPattern.load(out)


def test_lr_schedule_warms_up_and_decays():
    f = lr_lambda(IdentifyConfig(steps=100))
    assert f(0) == pytest.approx(0.1) and f(19) == 1.0 and f(50) == 1.0 and f(99) == pytest.approx(0.1)
    assert f(9) == pytest.approx(0.5)

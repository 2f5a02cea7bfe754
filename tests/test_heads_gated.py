"""Gated attention (head identification): the mix of full and streaming attention per KV head."""

from __future__ import annotations

import pytest
import torch

from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.gated import GatedAttention, gated_attention_reference, streaming_attention_banded
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models import load_model
from sedpa_compress.runtime.modes import build_mode
from sedpa_compress.runtime.reference import using_mode

SINK, RECENT = 4, 16


def _hidden(loaded, ids, mode):
    with torch.no_grad(), using_mode(loaded.model, mode):
        return loaded.model.model(input_ids=ids, use_cache=False).last_hidden_state


@pytest.fixture
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def _ids(loaded, t=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, loaded.model.config.vocab_size, (1, t), generator=g)


def test_alpha_one_reproduces_the_original_model(loaded):
    ids = _ids(loaded)
    with torch.no_grad():
        original = loaded.model.model(input_ids=ids, use_cache=False).last_hidden_state
    geom = loaded.geometry
    for backend in ("reference", "banded"):
        gated = GatedAttention(geom.num_layers, geom.num_kv_heads, sink=SINK, recent=RECENT, init=1.0, backend=backend)
        torch.testing.assert_close(_hidden(loaded, ids, gated), original, atol=1e-5, rtol=1e-5)


def test_alpha_zero_is_pure_streaming_attention(loaded):
    ids = _ids(loaded)
    geom = loaded.geometry
    streaming = _hidden(loaded, ids, build_mode("streaming", sink=SINK, recent=RECENT))
    for backend in ("reference", "banded"):
        gated = GatedAttention(geom.num_layers, geom.num_kv_heads, sink=SINK, recent=RECENT, init=0.0, backend=backend)
        torch.testing.assert_close(_hidden(loaded, ids, gated), streaming, atol=1e-5, rtol=1e-5)
    # and streaming really differs from full attention at this length, so the test has teeth
    full = _hidden(loaded, ids, None)
    assert (streaming - full).abs().max() > 1e-3


def test_binary_gates_equal_duo_mode_with_that_mask(loaded):
    """Per KV head, query heads of the GQA group follow it: 0/1 gates = the duo mode of the same mask."""
    ids = _ids(loaded)
    geom = loaded.geometry
    mask = [[(li + h) % 2 for h in range(geom.num_kv_heads)] for li in range(geom.num_layers)]
    gated = GatedAttention(geom.num_layers, geom.num_kv_heads, sink=SINK, recent=RECENT)
    with torch.no_grad():
        gated.gates.copy_(torch.tensor(mask, dtype=torch.float32))
    pattern = HeadPattern(gates=[[float(m) for m in row] for row in mask], mask=mask, sink=SINK, recent=RECENT)
    duo = _hidden(loaded, ids, build_mode("duo", pattern=pattern))
    torch.testing.assert_close(_hidden(loaded, ids, gated), duo, atol=1e-5, rtol=1e-5)


def test_fractional_gate_is_the_convex_mix():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 50, 8), torch.randn(1, 2, 50, 8), torch.randn(1, 2, 50, 8)
    full = gated_attention_reference(q, k, v, torch.ones(2), sink=2, recent=5, scaling=0.3)
    stream = gated_attention_reference(q, k, v, torch.zeros(2), sink=2, recent=5, scaling=0.3)
    mixed = gated_attention_reference(q, k, v, torch.tensor([0.25, 0.9]), sink=2, recent=5, scaling=0.3)
    w = torch.tensor([0.25, 0.25, 0.9, 0.9]).view(1, 4, 1, 1)  # query heads 0,1 -> kv 0; 2,3 -> kv 1
    torch.testing.assert_close(mixed, w * full + (1 - w) * stream)


@pytest.mark.parametrize("t,sink,recent", [(700, 4, 16), (700, 16, 64), (50, 16, 64), (10, 16, 4), (3, 0, 1),
                                           (129, 0, 64), (64, 2, 64)])
def test_banded_streaming_equals_the_masked_definition(t, sink, recent):
    """The CPU fast path sees exactly sink + recent keys per query, without a [t, t] matrix."""
    torch.manual_seed(t)
    q, k, v = torch.randn(1, 4, t, 8), torch.randn(1, 2, t, 8), torch.randn(1, 2, t, 8)
    banded = streaming_attention_banded(q, k, v, sink=sink, recent=recent, scaling=0.3)
    masked = gated_attention_reference(q, k, v, torch.zeros(2), sink=sink, recent=recent, scaling=0.3)
    torch.testing.assert_close(banded, masked, atol=1e-5, rtol=1e-5)


def test_banded_backend_matches_reference_outputs_and_gate_gradients():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 300, 8), torch.randn(1, 2, 300, 8), torch.randn(1, 2, 300, 8)
    outs = {}
    for backend in ("reference", "banded"):
        g = GatedAttention(1, 2, sink=4, recent=16, backend=backend)
        with torch.no_grad():
            g.gates.copy_(torch.tensor([[0.3, 0.8]]))
        y = g.attend(0, q, k, v, None, 0.3)
        y.square().sum().backward()
        outs[backend] = (y.detach(), g.gates.grad.clone())
    torch.testing.assert_close(outs["banded"][0], outs["reference"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["banded"][1], outs["reference"][1], atol=1e-4, rtol=1e-4)


def test_gradients_reach_only_the_gates(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir))
    geom = loaded.geometry
    loaded.model.requires_grad_(False)
    gated = GatedAttention(geom.num_layers, geom.num_kv_heads, sink=SINK, recent=RECENT, init=1.0, backend="banded")
    ids = _ids(loaded)
    with using_mode(loaded.model, gated):
        hidden = loaded.model.model(input_ids=ids, use_cache=False).last_hidden_state
    hidden[0, -5:].square().mean().backward()
    assert gated.gates.grad is not None and gated.gates.grad.abs().sum() > 0  # alpha = 1 still gets a gradient
    assert all(p.grad is None for p in loaded.model.parameters())


def test_original_source_mixes_the_original_models_full_attention():
    """full_source="original" (DuoAttention's reference): alpha * full attention of the *original* states
    (recorded in the target pass) + (1 - alpha) * streaming attention of the gated model's own states."""
    torch.manual_seed(2)
    q0, k0, v0 = torch.randn(1, 4, 120, 8), torch.randn(1, 2, 120, 8), torch.randn(1, 2, 120, 8)
    q1, k1, v1 = (x + 0.3 * torch.randn_like(x) for x in (q0, k0, v0))  # the gated model's perturbed states
    gate = torch.tensor([[0.3, 0.8]])
    for backend in ("reference", "banded"):
        g = GatedAttention(1, 2, sink=4, recent=16, backend=backend, full_source="original")
        with torch.no_grad():
            g.gates.copy_(gate)
        g.active, g.record = False, True
        full0 = g.attend(0, q0, k0, v0, None, 0.3)
        g.active, g.record = True, False
        mixed = g.attend(0, q1, k1, v1, None, 0.3)
        stream1 = gated_attention_reference(q1, k1, v1, torch.zeros(2), sink=4, recent=16, scaling=0.3)
        w = gate[0].repeat_interleave(2).view(1, 4, 1, 1)
        torch.testing.assert_close(mixed, w * full0 + (1 - w) * stream1, atol=1e-5, rtol=1e-5)
        own = gated_attention_reference(q1, k1, v1, gate[0], sink=4, recent=16, scaling=0.3)
        assert (mixed - own).abs().max() > 1e-3  # the gated source would give another output
        g.forget()
        with pytest.raises(SedpaError, match="no recorded original attention"):
            g.attend(0, q1, k1, v1, None, 0.3)


def test_original_source_with_alpha_one_keeps_every_layer_on_the_original_path(loaded):
    """All gates 1 except layer 0's: with the original source, layers >= 1 attend as the original model
    (only the residual stream carries layer 0's change); with the gated source their full attention reads
    the perturbed states. Both agree when every gate is 1."""
    ids = _ids(loaded)
    geom = loaded.geometry
    outs = {}
    for source in ("gated", "original"):
        gated = GatedAttention(geom.num_layers, geom.num_kv_heads, sink=SINK, recent=RECENT, backend="banded",
                               full_source=source)
        with torch.no_grad(), using_mode(loaded.model, gated):
            gated.active, gated.record = False, True
            original = loaded.model.model(input_ids=ids, use_cache=False).last_hidden_state
            gated.active, gated.record = True, False
            same = loaded.model.model(input_ids=ids, use_cache=False).last_hidden_state
            torch.testing.assert_close(same, original, atol=1e-5, rtol=1e-5)
            gated.gates[0] = 0.0
            outs[source] = loaded.model.model(input_ids=ids, use_cache=False).last_hidden_state
    assert (outs["gated"] - outs["original"]).abs().max() > 1e-4


def test_clamp_keeps_gates_in_unit_interval():
    g = GatedAttention(2, 2, sink=1, recent=2)
    with torch.no_grad():
        g.gates.copy_(torch.tensor([[-0.5, 0.5], [1.5, 1.0]]))
    g.clamp_()
    assert g.gates.tolist() == [[0.0, 0.5], [1.0, 1.0]]


@pytest.mark.gpu
def test_flex_backend_matches_reference_on_cuda():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, 700, 64, device="cuda") for h in (8, 2, 2))
    outs = {}
    for backend in ("reference", "flex"):
        g = GatedAttention(1, 2, sink=16, recent=64, backend=backend, device="cuda")
        with torch.no_grad():
            g.gates.copy_(torch.tensor([[0.3, 0.8]], device="cuda"))
        y = g.attend(0, q, k, v, None, 0.125)
        y.square().sum().backward()
        outs[backend] = (y.detach(), g.gates.grad.clone())
    torch.testing.assert_close(outs["flex"][0], outs["reference"][0], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(outs["flex"][1], outs["reference"][1], atol=1e-2, rtol=1e-2)

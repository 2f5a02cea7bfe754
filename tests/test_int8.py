"""Row-wise int8 weight storage (models.int8): what it stores, what sedpa's loader restores, what it refuses."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sedpa_compress.errors import SedpaError
from sedpa_compress.models import int8
from sedpa_compress.models.loader import EMBEDDED_DIR, load_model

ROOT = Path(__file__).resolve().parents[1]


def _roundtrip_script():
    """bench/scripts/tiny_int8_roundtrip.py: the rounding the int8 evidence in the docs was measured with."""
    spec = importlib.util.spec_from_file_location("tiny_int8_roundtrip", ROOT / "bench/scripts/tiny_int8_roundtrip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A random tied-embedding Llama saved in bf16, with one all-zero projection (as a grown layer starts)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
    src = tmp_path_factory.mktemp("int8") / "src"
    model.save_pretrained(src)
    return src


def test_int8_folder_stores_each_matrix_as_int8_with_a_scale_a_row_and_loads_as_its_roundtrip(tiny_folder, tmp_path):
    """Every 2-D weight becomes int8 + an fp32 scale per row, norms stay bf16; the file is about half the bf16
    file. sedpa's loader restores exactly the weights bench/scripts/tiny_int8_roundtrip.py wrote (the docs' evidence),
    ties the output head to the embeddings, and gives the logits of the dequantized folder loaded by transformers."""
    q = int8.quantize_folder(tiny_folder, tmp_path / "q")
    assert not (q / "model.safetensors").exists() and (q / int8.INT8_FILE).is_file()
    assert (q / "config.json").read_bytes() == (tiny_folder / "config.json").read_bytes()
    original = load_file(str(tiny_folder / "model.safetensors"))
    with safe_open(str(q / int8.INT8_FILE), framework="pt") as f:
        assert f.metadata() == {"format": int8.FORMAT, "dtype": "torch.bfloat16"}
        stored = {k: f.get_tensor(k) for k in f.keys()}
    for name, t in original.items():
        if t.ndim == 2:
            assert stored[name].dtype == torch.int8 and stored[name + int8.SCALE_SUFFIX].shape == (t.shape[0],)
            assert int(stored[name].abs().max()) == (0 if not t.any() else 127)  # every nonzero row uses the range
        else:
            assert torch.equal(stored[name], t)
    ratio = (q / int8.INT8_FILE).stat().st_size / (tiny_folder / "model.safetensors").stat().st_size
    assert 0.5 < ratio < 0.6, ratio

    restored = int8.load_int8_state_dict(q / int8.INT8_FILE)
    script = _roundtrip_script()
    for name, t in original.items():
        want = script.int8_roundtrip(t)[0] if t.ndim == 2 else t
        assert restored[name].dtype == torch.bfloat16 and torch.equal(restored[name], want), name
    assert not restored["model.layers.1.self_attn.o_proj.weight"].any()  # a zero row stays zero

    loaded = load_model(str(q), dtype="bfloat16")
    model = loaded.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for name, t in model.state_dict().items():
        if name in restored:
            assert torch.equal(t, restored[name]), name
    plain = load_model(str(int8.dequantize_folder(q, tmp_path / "back")), dtype="bfloat16").model
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    from sedpa_compress.bench.results import weights_sha256

    assert weights_sha256(q) is not None and weights_sha256(q) != weights_sha256(tiny_folder)


def test_int8_storage_refuses_what_it_cannot_restore_and_writes_nothing(tiny_folder, tmp_path):
    """Another format's metadata, an int8 tensor without its scale, weights that do not fit the config, a folder
    without model.safetensors, an existing destination: each a one-line SedpaError naming the fix."""
    q = int8.quantize_folder(tiny_folder, tmp_path / "q")
    tensors = load_file(str(q / int8.INT8_FILE))

    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"format": "other", "dtype": "torch.bfloat16"})
    with pytest.raises(SedpaError, match="not sedpa's int8 format"):
        int8.load_int8_state_dict(bad)
    no_scale = {k: v for k, v in tensors.items() if k != "model.embed_tokens.weight" + int8.SCALE_SUFFIX}
    save_file(no_scale, str(bad), metadata={"format": int8.FORMAT, "dtype": "torch.bfloat16"})
    with pytest.raises(SedpaError, match="has no float scale per row"):
        int8.load_int8_state_dict(bad)
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(SedpaError, match="cannot read"):
        int8.load_int8_state_dict(bad)

    cfg = json.loads((q / "config.json").read_text())
    (q / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(SedpaError, match="does not fit .*missing model.layers.2"):
        load_model(str(q))
    (q / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))  # every tensor there, one shape off
    with pytest.raises(SedpaError, match=r"does not fit .*mlp.down_proj.weight \(64, 128\) vs \(64, 96\)"):
        load_model(str(q))
    with pytest.raises(SedpaError, match="has no model.safetensors"):
        int8.quantize_folder(q, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    with pytest.raises(SedpaError, match="already ends in"):
        int8.quantize_state_dict({"w.int8_scale": torch.ones(2, 2)})
    with pytest.raises(SedpaError, match="has no model.int8.safetensors"):
        int8.dequantize_folder(tiny_folder, tmp_path / "back")
    with pytest.raises(SystemExit, match="error: .* has no model.safetensors"):
        int8.main(["quantize", str(tmp_path / "missing"), "--to", str(tmp_path / "x")])


def test_the_embedded_model_in_int8_takes_about_half_its_bytes(tmp_path):
    """The lever the training doc names: the shipped weights stored as int8 take about half the 45 MB budget
    (room for about twice the parameters), and sedpa's loader restores the roundtrip weights."""
    shipped = EMBEDDED_DIR / "sedpa-tiny"
    q = int8.quantize_folder(shipped, tmp_path / "q")
    ratio = (q / int8.INT8_FILE).stat().st_size / (shipped / "model.safetensors").stat().st_size
    assert 0.49 < ratio < 0.52, ratio
    model = load_model(str(q), dtype="bfloat16").model
    original = load_file(str(shipped / "model.safetensors"))
    script = _roundtrip_script()
    emb = "model.embed_tokens.weight"
    assert torch.equal(model.state_dict()[emb], script.int8_roundtrip(original[emb])[0])

"""Loading an artifact with transformers alone: `AutoModelForCausalLM.from_pretrained(ART, trust_remote_code=True)`
(issue 7). The artifact carries `modeling_sedpa.py`; these tests keep it in sync with the package."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import build_tiny, random_pattern
from sedpa_compress.artifact.remote_code import AUTO_MAP, REMOTE_CODE_DIR, REMOTE_CODE_FILES
from sedpa_compress.calibration.stats import CalibrateConfig
from sedpa_compress.models import load_model
from sedpa_compress.svd.compress import CompressConfig
from sedpa_compress.svd.factored import DualPathLinear
from sedpa_compress.svd.run import CompressJob, run_compress


def remote_module():
    spec = importlib.util.spec_from_file_location("sedpa_remote_modeling", REMOTE_CODE_DIR / "modeling_sedpa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_artifact(family: str, tmp: Path, *, scope: str = "streaming") -> Path:
    loaded = load_model(str(build_tiny(family, tmp / "model")))
    pattern = random_pattern(loaded.geometry)
    pattern.save(tmp / "p.pattern.json")
    job = CompressJob(out=tmp / "art", pattern=tmp / "p.pattern.json", measure_ppl=False,
                      compress=CompressConfig(rank_ratio=0.7, scope=scope), calibrate=CalibrateConfig(tokens=512, seq_len=64))
    run_compress(loaded, job, show_progress=False)
    return tmp / "art"


@pytest.mark.parametrize("split", ["rows", "cols"])
@pytest.mark.parametrize("bias", [False, True])
def test_remote_lowrank_math_equals_dual_path_linear(split, bias):
    g = torch.Generator().manual_seed(1)
    in_f, out_f, rank = 24, 16, 5
    size = out_f if split == "rows" else in_f
    perm = torch.randperm(size, generator=g)
    dense_index, lowrank_index = perm[:size // 3], perm[size // 3:]
    if split == "rows":
        dense_w = torch.randn(dense_index.numel(), in_f, generator=g)
        down, up = torch.randn(rank, in_f, generator=g), torch.randn(lowrank_index.numel(), rank, generator=g)
    else:
        dense_w = torch.randn(out_f, dense_index.numel(), generator=g)
        down, up = torch.randn(rank, lowrank_index.numel(), generator=g), torch.randn(out_f, rank, generator=g)
    b = torch.randn(out_f, generator=g) if bias else None
    ref = DualPathLinear.from_factors(split=split, dense_weight=dense_w, down=down, up=up, dense_index=dense_index,
                                      lowrank_index=lowrank_index, in_features=in_f, out_features=out_f, bias=b)
    remote = remote_module().SedpaLowRankLinear(in_f, out_f, split=split, rank=rank, dense=dense_index.numel(),
                                                lowrank=lowrank_index.numel(), bias=bias)
    # The artifact's tensors (same names) load into the remote module unchanged.
    assert set(remote.state_dict()) == set(ref.state_dict())
    remote.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, in_f, generator=g)
    assert torch.equal(remote(x), ref(x))
    # ... and both equal the dense matrix the factors stand for.
    torch.testing.assert_close(remote(x), x @ ref.dense_equivalent().T + (b if bias else 0), rtol=1e-5, atol=1e-5)


def test_remote_code_imports_only_torch_and_transformers():
    """Whoever loads the artifact may not have sedpa installed."""
    for name in REMOTE_CODE_FILES:
        tree = ast.parse((REMOTE_CODE_DIR / name).read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert roots <= {"__future__", "torch", "transformers"}, roots


@pytest.fixture(scope="module")
def llama_artifact(tmp_path_factory) -> Path:
    return make_artifact("llama", tmp_path_factory.mktemp("rc-llama"))


def test_fresh_artifact_carries_the_package_remote_code(llama_artifact):
    for name in REMOTE_CODE_FILES:
        assert (llama_artifact / name).read_bytes() == (REMOTE_CODE_DIR / name).read_bytes(), f"{name} out of sync"
    config = json.loads((llama_artifact / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    manifest = json.loads((llama_artifact / "manifest.json").read_text())
    assert set(REMOTE_CODE_FILES) <= set(manifest["files"])


def _ids() -> torch.Tensor:
    return torch.randint(0, 300, (2, 37), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("family", "scope"), [("llama", "streaming"), ("mistral", "all"), ("qwen2", "streaming")])
def test_from_pretrained_trust_remote_code_gives_sedpa_load_logits(family, scope, tmp_path, llama_artifact):
    """Same logits as `sedpa_compress.load` for every supported family; scope=all has empty dense parts."""
    from transformers import AutoModelForCausalLM

    import sedpa_compress

    art = llama_artifact if family == "llama" else make_artifact(family, tmp_path, scope=scope)
    hf = AutoModelForCausalLM.from_pretrained(str(art), trust_remote_code=True)
    ours = sedpa_compress.load(str(art))
    assert type(hf).__name__ == f"Sedpa{type(ours.model).__name__}"
    assert hf.config.model_type == family
    lowrank = [m for m in hf.modules() if type(m).__name__ == "SedpaLowRankLinear"]
    assert len(lowrank) == len(ours.artifact["projections"]) > 0
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, ours.model(ids).logits)


def test_remote_model_generates_like_sedpa_load(llama_artifact):
    from transformers import AutoModelForCausalLM

    import sedpa_compress

    hf = AutoModelForCausalLM.from_pretrained(str(llama_artifact), trust_remote_code=True)
    ours = sedpa_compress.load(str(llama_artifact))
    ids = _ids()[:1, :12]
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, ours.model(ids).logits)
        out = hf.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        ref = ours.model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 17) and torch.equal(out, ref)


def test_sedpa_loader_ignores_auto_map(llama_artifact):
    """`sedpa_compress.load` keeps its own path: the artifact's auto_map must not pull in the remote code."""
    import sedpa_compress

    loaded = sedpa_compress.load(str(llama_artifact))
    assert any(isinstance(m, DualPathLinear) for m in loaded.model.modules())
    assert not any(type(m).__name__ == "SedpaLowRankLinear" for m in loaded.model.modules())

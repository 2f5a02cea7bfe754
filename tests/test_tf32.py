"""Training sedpa-tiny turns TF32 on for its own matmuls only: later work in the same process
(calibration, factoring, a test session) keeps full fp32 matmuls."""

from __future__ import annotations

from pathlib import Path

import torch

from sedpa_compress.tiny.config import load_config
from sedpa_compress.tiny.train import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
SMALL = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
             tokens_per_step=2048, curriculum=[{"until": 1.0, "lengths": {256: 1}}], num_workers=0,
             warmup_steps=1, checkpoint_every=2, log_every=1)


def test_training_restores_the_tf32_settings(tmp_path):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    seen = []

    def log(_line: str) -> None:  # called during training: TF32 is on there
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))

    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        train(load_config(RECIPE, steps=1, **SMALL), tmp_path / "run", device="cpu", eval_at_end=False, log=log)
        assert seen and all(s == (True, True) for s in seen)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

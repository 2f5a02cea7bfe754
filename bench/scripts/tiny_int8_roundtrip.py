"""Would sedpa-tiny survive 8-bit weights? Every matrix of a model folder (embeddings and linear layers; norms stay)
rounded to symmetric int8 with one scale per output row and back to the folder's dtype, written as a loadable model
folder, with what the int8 form would take on disk. If retrieval and perplexity hold, shipping int8 weights (and
dequantizing at load) would fit about twice the parameters in the package's 45 MB: the lever the training doc names
after stage 22. Evaluate the folder it writes with tiny.evaluate beside the original, on the same cells:

    PYTHONPATH=. python3 bench/scripts/tiny_int8_roundtrip.py --model runs/soup21 --to /tmp/soup21-int8 \
        --out bench/results/tiny_soup21_int8_roundtrip.json
    python -m sedpa_compress.tiny.evaluate --model /tmp/soup21-int8 --contexts 1024,4096 --depths 10 --samples 3 \
        --stream-max-context 1 --ppl-tokens 2048 --device cpu --batch 30 --out ...
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def int8_roundtrip(weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(the weight after int8 and back, in its dtype; the largest error relative to its row's absmax)."""
    w = weight.float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    back = (w / scale).round().clamp(-127, 127) * scale
    return back.to(weight.dtype), float(((back - w).abs() / (scale * 127.0)).max())


def main(argv: list[str] | None = None) -> None:
    from safetensors.torch import load_file, save_file

    from sedpa_compress.atomic import atomic_directory
    from sedpa_compress.bench.results import make_result, write_result

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a model folder (model.safetensors, config, tokenizer)")
    ap.add_argument("--to", type=Path, required=True, help="the round-tripped model folder to write")
    ap.add_argument("--out", type=Path, required=True, help="the JSON: per-matrix errors and the int8 size")
    args = ap.parse_args(argv)
    t0 = time.time()
    state = load_file(str(args.model / "model.safetensors"))
    rows, out = [], {}
    int8_bytes = stored_bytes = 0
    for name, tensor in state.items():
        stored_bytes += tensor.numel() * tensor.element_size()
        if tensor.dim() == 2:
            out[name], err = int8_roundtrip(tensor)
            int8_bytes += tensor.numel() + tensor.shape[0] * 2  # int8 values + one bf16 scale a row
            rows.append({"tensor": name, "shape": list(tensor.shape), "max_error_of_row_absmax": round(err, 5)})
        else:
            out[name] = tensor
            int8_bytes += tensor.numel() * tensor.element_size()
    with atomic_directory(args.to) as tmp:
        for item in args.model.iterdir():
            if item.is_file() and item.name != "model.safetensors":
                shutil.copy2(item, tmp / item.name)
        save_file(out, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    summary = {"int8": {"matrices": len(rows), "parameters": sum(t.numel() for t in state.values()),
                        "stored_mb": round(stored_bytes / 1e6, 2), "int8_mb": round(int8_bytes / 1e6, 2),
                        "max_error_of_row_absmax": max(r["max_error_of_row_absmax"] for r in rows)}}
    write_result(args.out, make_result("tiny-int8-roundtrip", model=str(args.model), settings={"to": str(args.to)},
                                       rows=rows, summary=summary, device="cpu",
                                       wall_s=round(time.time() - t0, 1)))
    print(summary["int8"])


if __name__ == "__main__":
    main()

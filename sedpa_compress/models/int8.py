"""Row-wise int8 weight storage for a model folder: about half the bytes of bf16, dequantized when sedpa loads it.

Why: the embedded sedpa-tiny ships inside the package under a 45 MB budget. Stored in bf16 that is ~22M parameters;
in int8 with one scale per output row it is about twice that. On the shipped soup21 the round trip changed no
verdict of 60 held-out needle cells and moved held-out perplexity from 54.8 to 54.7
(bench/results/tiny_soup21_int8_acceptance_1k4k_cpu.json). A folder holds `model.int8.safetensors` in place of
`model.safetensors`: every 2-D float tensor (embeddings, projections) as symmetric int8 (values in [-127, 127]) plus
its fp32 scale per row under `<name>.int8_scale`; every other tensor (norm weights) as it was. The file's metadata
names the format and the dtype the weights are restored to. Plain transformers cannot load such a folder;
`sedpa_compress.models.loader` can, and so can `python -m sedpa_compress.models.int8 dequantize`.

    python -m sedpa_compress.models.int8 quantize runs/soup21 --to runs/soup21-int8
    python -m sedpa_compress.models.int8 dequantize runs/soup21-int8 --to runs/soup21-bf16
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from sedpa_compress.errors import SedpaError, one_line_errors
from sedpa_compress.models.loaded import INT8_FILE  # the file name the loader looks for

__all__ = ["FORMAT", "INT8_FILE", "SCALE_SUFFIX", "dequantize_folder", "load_int8_state_dict", "quantize_folder",
           "quantize_state_dict"]
FORMAT = "sedpa-int8-rowwise-v1"
SCALE_SUFFIX = ".int8_scale"
_DTYPES = {"torch.bfloat16": torch.bfloat16, "torch.float16": torch.float16, "torch.float32": torch.float32}


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one fp32 scale per row: (int8 [rows, cols], scale [rows]); an all-zero row keeps
    scale 0 and dequantizes to zeros (grown layers start with zeroed output projections)."""
    w = weight.float()
    scale = w.abs().amax(dim=1) / 127.0
    q = torch.where(scale[:, None] > 0, w / scale.clamp(min=torch.finfo(torch.float32).tiny)[:, None],
                    torch.zeros_like(w))
    return q.round().clamp(-127, 127).to(torch.int8), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.float() * scale.float()[:, None]).to(dtype)


def quantize_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of `model.int8.safetensors` for a state dict of one float dtype."""
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) != 1:
        raise SedpaError(f"the weights mix dtypes {sorted(map(str, dtypes))}: int8 storage restores one dtype; "
                         "save the model in one dtype first")
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.endswith(SCALE_SUFFIX):
            raise SedpaError(f"tensor {name!r} already ends in {SCALE_SUFFIX}: the folder looks quantized already")
        if t.ndim == 2 and t.is_floating_point():
            out[name], out[name + SCALE_SUFFIX] = quantize_rows(t)
        else:
            out[name] = t.contiguous()
    return out, {"format": FORMAT, "dtype": str(dtypes.pop())}


def load_int8_state_dict(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The dequantized state dict of a `model.int8.safetensors`, in `dtype` (default: the dtype it was saved from).
    A file of another format, or an int8 tensor without its scale, is refused with what to do."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise SedpaError(f"cannot read {path} ({type(exc).__name__}): re-create it with "
                         "`python -m sedpa_compress.models.int8 quantize`") from None
    if meta.get("format") != FORMAT or meta.get("dtype") not in _DTYPES:
        raise SedpaError(f"{path} is not sedpa's int8 format ({FORMAT}, metadata {meta}): re-create it with "
                         "`python -m sedpa_compress.models.int8 quantize`")
    dtype = dtype or _DTYPES[meta["dtype"]]
    state: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            if name[: -len(SCALE_SUFFIX)] not in tensors:
                raise SedpaError(f"{path}: scale {name!r} has no int8 tensor; re-create the file")
            continue
        if t.dtype == torch.int8:
            scale = tensors.get(name + SCALE_SUFFIX)
            if t.ndim != 2 or scale is None or scale.shape != (t.shape[0],) or not scale.is_floating_point():
                raise SedpaError(f"{path}: int8 tensor {name!r} has no float scale per row; re-create the file")
            state[name] = dequantize_rows(t, scale, dtype)
        elif t.is_floating_point():
            state[name] = t.to(dtype)
        else:
            raise SedpaError(f"{path}: tensor {name!r} has dtype {t.dtype}, neither int8 nor float; re-create the file")
    return state


def quantize_folder(src: Path, to: Path) -> Path:
    """A copy of model folder `src` (single-file `model.safetensors`) with its weights stored as int8."""
    from safetensors.torch import load_file, save_file

    from sedpa_compress.atomic import atomic_directory

    src, to = Path(src), Path(to)
    weights = src / "model.safetensors"
    if not weights.is_file():
        raise SedpaError(f"{src} has no model.safetensors: pass a model folder with single-file safetensors weights")
    tensors, meta = quantize_state_dict(load_file(str(weights)))
    with atomic_directory(to) as tmp:
        for item in src.iterdir():
            if item.is_file() and item.name != "model.safetensors":
                shutil.copy2(item, tmp / item.name)
        save_file(tensors, str(tmp / INT8_FILE), metadata=meta)
    return to


def dequantize_folder(src: Path, to: Path) -> Path:
    """A copy of an int8 model folder with `model.safetensors` in the saved dtype: loadable by plain transformers."""
    from safetensors.torch import save_file

    from sedpa_compress.atomic import atomic_directory

    src, to = Path(src), Path(to)
    if not (src / INT8_FILE).is_file():
        raise SedpaError(f"{src} has no {INT8_FILE}: pass a folder written by `python -m sedpa_compress.models.int8 "
                         "quantize`")
    state = load_int8_state_dict(src / INT8_FILE)
    with atomic_directory(to) as tmp:
        for item in src.iterdir():
            if item.is_file() and item.name != INT8_FILE:
                shutil.copy2(item, tmp / item.name)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return to


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sedpa_compress.models.int8", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd, help_ in (("quantize", "copy a model folder with its weights stored as row-wise int8"),
                       ("dequantize", "copy an int8 model folder with model.safetensors restored")):
        p = sub.add_parser(cmd, help=help_)
        p.add_argument("model", type=Path)
        p.add_argument("--to", type=Path, required=True)
    args = ap.parse_args(argv)
    with one_line_errors():
        fn = quantize_folder if args.cmd == "quantize" else dequantize_folder
        out = fn(args.model, args.to)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
